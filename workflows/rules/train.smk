# One job per (experiment, seed): `bench run` trains it and writes the result file; one MLflow run each.
# The job reruns when the experiment's resolved config changes (params), not when unrelated files change.
def train_inputs(wildcards):
    inputs = [f"{RESULTS}/mlflow.ready"]
    if config["download"] and ex.profile_settings(PROFILE)["data"] == "real":
        inputs.append(f"{RESULTS}/data/{ex.get(wildcards.experiment).dataset}.ready")
    return inputs


rule train:
    input:
        train_inputs,
    output:
        f"{RESULTS}/runs/{{experiment}}/seed{{seed}}.json",
    log:
        f"{RESULTS}/logs/{{experiment}}/seed{{seed}}.log",
    params:
        config_hash=lambda w: ex.config_hash(ex.config(ex.get(w.experiment), PROFILE)),
        data_root=f"--data-root {shlex.quote(config['data_root'])}" if config["data_root"] else "",
        download="--download" if config["download"] else "",
    threads: config["threads"]
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} run --experiment {{wildcards.experiment}} --seed {{wildcards.seed}} --profile {PROFILE} "
        f"--out {{output}} --threads {{threads}} --device {config['device']} {{params.data_root}} "
        "{params.download} > {log} 2>&1"
