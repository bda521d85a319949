# Create the MLflow store and one MLflow experiment per paper before any training job starts, so that parallel
# jobs never race to create them (docs/design.md#conventions-taken-from-the-tools).
rule mlflow_setup:
    output:
        f"{RESULTS}/mlflow.ready",
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} setup --profile {PROFILE} --touch {{output:q}}"


# With --config download=true, each real dataset is downloaded (and verified, and extracted) once, before the
# training jobs that read it, instead of by every job at the same time.
rule fetch_dataset:
    output:
        f"{RESULTS}/data/{{dataset}}.ready",
    params:
        data_root=f"--data-root {shlex.quote(config['data_root'])}" if config["data_root"] else "",
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} data download {{wildcards.dataset}} {{params.data_root}} > {{output:q}}"


# Without download, every real dataset the targets read is checked once before any training job starts: a missing
# one stops the DAG here with one line naming it and the fix, instead of failing every job that reads it.
rule check_dataset:
    output:
        f"{RESULTS}/data/{{dataset}}.checked",
    params:
        data_root=f"--data-root {shlex.quote(config['data_root'])}" if config["data_root"] else "",
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} data status {{wildcards.dataset}} --require {{params.data_root}} > {{output:q}}"
