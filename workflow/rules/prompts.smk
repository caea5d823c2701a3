from ctxenergy.paths import (
    BATCH_PROMPT_JOB,
    BATCH_PROMPT_PATTERN,
    BATCH_WARMUP_PROMPT_PATTERN,
    PROMPT_JOB,
    PROMPT_PATTERN,
    WARMUP_PROMPT_PATTERN,
)


rule make_prompts:
    output:
        prompt=PROMPT_PATTERN,
        warmup=WARMUP_PROMPT_PATTERN,
    log:
        log_path("make_prompts", PROMPT_JOB),
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
        prompt=BATCH_PROMPT_PATTERN,
        warmup=BATCH_WARMUP_PROMPT_PATTERN,
    log:
        log_path("make_prompts", BATCH_PROMPT_JOB),
