rule make_prompts:
    output:
        prompt="results/prompts/{model}/L{length}.npy",
        warmup="results/prompts/{model}/L{length}.warmup.npy",
    log:
        "results/logs/make_prompts/{model}/L{length}.log",
    priority: PROMPTS_PRIORITY
    localrule: True
    conda:
        "../../envs/hf.yaml"
    params:
        config=SETTINGS,
        batch=batch_argument,
    shell:
        "ctxenergy prompts --config {params.config} --model {wildcards.model} --length {wildcards.length}"
        "{params.batch} --out {output.prompt} --warmup-out {output.warmup} > {log} 2>&1"


# A batch's B distinct prompts (and B distinct warm-up prompts) of one length, shape (B, L).
use rule make_prompts as make_batch_prompts with:
    output:
        prompt="results/prompts/{model}/B{batch}/L{length}.npy",
        warmup="results/prompts/{model}/B{batch}/L{length}.warmup.npy",
    log:
        "results/logs/make_prompts/{model}/B{batch}/L{length}.log",
