# Cells computed from the model alone (parameter counts, forward FLOPs): one job per model a cell names, at full
# width in every profile, under every convention the paper's grid lists (bench/run/deterministic.py).
rule measure_model:
    output:
        f"{RESULTS}/models/{{measurement}}.json",
    log:
        f"{RESULTS}/logs/models/{{measurement}}.log",
    params:
        config_hash=lambda w: ex.config_hash(det.spec(det.measurements()[w.measurement][0])),
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} measure --id {{wildcards.measurement}} --profile {PROFILE} --out {{output:q}} > {{log:q}} 2>&1"
