# Create the MLflow store and one MLflow experiment per paper before any training job starts, so that parallel
# jobs never race to create them (design.md: MLflow conventions).
rule mlflow_setup:
    output:
        f"{RESULTS}/mlflow.ready",
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} setup --profile {PROFILE} --touch {{output}}"
