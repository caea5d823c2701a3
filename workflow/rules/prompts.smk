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
    shell:
        "ctxenergy prompts --config {params.config} --model {wildcards.model} --length {wildcards.length}"
        " --out {output.prompt} --warmup-out {output.warmup} > {log} 2>&1"
