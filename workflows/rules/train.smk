# One job per (experiment, seed): `bench run` trains it and writes the result file; one MLflow run each.
# The job reruns when the experiment's resolved config changes (params), not when unrelated files change.
TARGET_DATASETS = sorted({ex.get(t).dataset for t in TARGETS})


@cache
def experiment_config(experiment: str) -> dict:
    """The experiment's resolved config in this profile (once per experiment, not per seed and use)."""
    return ex.config(ex.get(experiment), PROFILE)


def done_already(wildcards) -> bool:
    """The job's result file is there, valid for the experiment's config today, and not FAILED: a `bench run` of
    that seed before the DAG's first start, which Snakemake has no record of (issue 31)."""
    from bench.run import results

    path = Path(f"{RESULTS}/runs/{wildcards.experiment}/seed{wildcards.seed}.json")
    if not path.exists():
        return False
    try:
        result = results.load(path, PROFILE, wildcards.experiment, int(wildcards.seed),
                              experiment_config(wildcards.experiment))
    except results.Invalid:
        return False
    if result["status"] == "FAILED":
        return False
    forget_record(str(path))
    return True


def forget_record(output: str):
    """Drop Snakemake's own record of a result file that done_already found valid: the record's shell command and
    params are the rule's as they were when the seed trained, and a later version of this rule (a suite upgrade) would
    otherwise make Snakemake delete the result and train the seed again. The result file's config decides instead
    (the result file is the source of truth; a changed config still trains it again)."""
    try:
        workflow.persistence._delete_record(output)
    except Exception:  # no record, or a Snakemake without this (private) call: its own triggers stay
        pass


def train_inputs(wildcards):
    inputs = [f"{RESULTS}/mlflow.ready"]
    if ex.profile_settings(PROFILE)["data"] == "real":
        if config["download"]:
            inputs.append(f"{RESULTS}/data/{ex.get(wildcards.experiment).dataset}.ready")
        else:  # every dataset of the targets checked before any training job starts
            inputs += [f"{RESULTS}/data/{d}.checked" for d in TARGET_DATASETS]
    if done_already(wildcards):
        # its inputs only order a job that must run: a store or a marker made after the result (mlflow_setup's, the
        # first time the DAG runs) must not make Snakemake train that seed again
        return [ancient(f) for f in inputs if Path(f).exists()]
    return inputs


@cache
def plan_jobs() -> dict:
    """experiment -> its estimate in `bench plan --write`'s JSON (config plan); empty without a plan."""
    if not config.get("plan"):
        return {}
    return {j["experiment"]: j for j in json.loads(Path(config["plan"]).read_text())["jobs"]}


if config.get("plan"):  # bench run's start line and `bench status` read each job's estimate from it
    import os

    os.environ["BENCH_PLAN"] = os.path.abspath(config["plan"])


def planned(experiment: str) -> dict:
    return plan_jobs().get(experiment, {})


def planned_minutes(wildcards, attempt):
    """The job's runtime for the scheduler: 1.5 x `bench plan`'s estimate (config plan), else config runtime."""
    seconds = planned(wildcards.experiment).get("seconds")
    return (max(10, math.ceil(1.5 * seconds / 60)) if seconds else config["runtime"]) * attempt


def planned_mem_mb(wildcards, attempt):
    """The job's memory for the scheduler: 1.25 x its predicted host peak in a plan written with `bench plan --fit`
    (config plan), at least config mem_mb; more with each attempt."""
    host = planned(wildcards.experiment).get("host_bytes")
    return max(config["mem_mb"], math.ceil(1.25 * host / 2**20) if host else 0) * attempt


def gpu_slots(wildcards) -> int:
    """Job packing (bench/run/gpus.py): a job whose model is small per the plan takes one slot of a GPU, others a
    whole GPU (every slot); without a plan, one slot each."""
    if not config["gpus"]:
        return 0
    macs = planned(wildcards.experiment).get("macs")
    if macs is None or macs < config["small_job_mmacs"] * 1e6:
        return 1
    return config["slots_per_gpu"]


rule train:
    input:
        train_inputs,
    output:
        f"{RESULTS}/runs/{{experiment}}/seed{{seed}}.json",
    # the job's log, appended by every attempt after a separator line (not a `log:`, which Snakemake deletes before
    # each attempt): bench run's start line, a line per epoch, and the outcome of each
    params:
        log=f"{RESULTS}/logs/{{experiment}}/seed{{seed}}.log",
        config_hash=lambda w: ex.config_hash(experiment_config(w.experiment)),
        data_root=f"--data-root {shlex.quote(config['data_root'])}" if config["data_root"] else "",
        download="--download" if config["download"] else "",
        gpus=lambda w: (f"--gpus {config['gpus']} --slots-per-gpu {config['slots_per_gpu']} --gpu-slots {gpu_slots(w)}"
                        if config["gpus"] else ""),
    threads: config["threads"]
    # a failed attempt is retried (config retries) with more memory and time; the last one, if it fails too,
    # writes a FAILED result file with the error (--record-failure), so that the report shows it and says why
    retries: config["retries"]
    resources:
        mem_mb=planned_mem_mb,
        runtime=planned_minutes,
        attempt=lambda w, attempt: attempt,
        gpu=gpu_slots,
    conda:
        CONDA_ENV
    shell:
        "mkdir -p \"$(dirname {params.log:q})\" && echo \"===== attempt {resources.attempt}, $(date -u +%Y-%m-%dT%H:%M:%SZ), "
        "$(hostname) =====\" >> {params.log:q} && "
        f"{BENCH} run --experiment {{wildcards.experiment}} --seed {{wildcards.seed}} --profile {PROFILE} "
        f"--out {{output:q}} --threads {{threads}} --device {config['device']} {{params.data_root}} "
        "{params.download} {params.gpus} "
        f"$( [ {{resources.attempt}} -gt {config['retries']} ] && echo --record-failure ) >> {{params.log:q}} 2>&1"
