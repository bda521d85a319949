# One job per (experiment, seed): `bench run` trains it and writes the result file; one MLflow run each.
# The job reruns when the experiment's resolved config changes (params), not when unrelated files change.
def train_inputs(wildcards):
    inputs = [f"{RESULTS}/mlflow.ready"]
    if config["download"] and ex.profile_settings(PROFILE)["data"] == "real":
        inputs.append(f"{RESULTS}/data/{ex.get(wildcards.experiment).dataset}.ready")
    return inputs


def planned_minutes(wildcards, attempt):
    """The job's runtime for the scheduler: 1.5 x `bench plan`'s estimate (config plan), else config runtime."""
    if not config.get("plan"):
        return config["runtime"] * attempt
    if "PLAN" not in globals():
        globals()["PLAN"] = {j["experiment"]: j["seconds"] for j in json.loads(Path(config["plan"]).read_text())["jobs"]}
    seconds = PLAN.get(wildcards.experiment)
    return (max(10, math.ceil(1.5 * seconds / 60)) if seconds else config["runtime"]) * attempt


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
        gpus=f"--gpus {config['gpus']} --slots-per-gpu {config['slots_per_gpu']}" if config["gpus"] else "",
    threads: config["threads"]
    # a failed attempt is retried (config retries) with more memory and time; the last one, if it fails too,
    # writes a FAILED result file with the error (--record-failure), so that the report shows it and says why
    retries: config["retries"]
    resources:
        mem_mb=lambda w, attempt: config["mem_mb"] * attempt,
        runtime=planned_minutes,
        attempt=lambda w, attempt: attempt,
        gpu=1 if config["gpus"] else 0,
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} run --experiment {{wildcards.experiment}} --seed {{wildcards.seed}} --profile {PROFILE} "
        f"--out {{output}} --threads {{threads}} --device {config['device']} {{params.data_root}} "
        "{params.download} {params.gpus} "
        f"$( [ {{resources.attempt}} -gt {config['retries']} ] && echo --record-failure ) > {{log}} 2>&1"
