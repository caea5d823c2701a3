# Shared random weights (models with random_weights: shared): generated once per model, before its first engine
# load, into weights_cache (outside git); every engine then loads the same operand values.


rule shared_weights:
    output:
        f"{config['weights_cache']}/{{model}}/ctxenergy-weights.json",
    log:
        log_path("shared_weights", "{model}"),
    benchmark:
        benchmark_path("shared_weights", "{model}")
    priority: PROMPTS_PRIORITY
    conda:
        "../../envs/hf.yaml"
    resources:
        gpu=lambda wildcards: 1 if config["device"] == "cuda" else 0,
        runtime=30,
        mem_mb=64000,
    params:
        config=SETTINGS,
    shell:
        "ctxenergy weights --config {params.config} --model {wildcards.model} > {log} 2>&1"
