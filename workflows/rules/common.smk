# Shared by all rules: the config, validated; the profile; and the targets, derived from the registry.
import fnmatch
from functools import cache
import json
import math
from pathlib import Path
import shlex
import sys

sys.path.insert(0, workflow.basedir)  # use this checkout's bench package, installed or not
from bench import BenchError
from bench import experiments as ex
from bench.claims.registry import load_claims
from bench.run import deterministic as det
from bench.run.targets import targets
from snakemake.settings.types import DeploymentMethod

if workflow.local_exec and workflow.resource_settings.cores == 0:  # Snakemake would wait for a free core forever
    raise WorkflowError("--cores 0 (or --jobs 0): no job can ever start; give --cores N (at least 1) or --cores all")


def config_problem(config) -> str:
    """workflows/schemas/config.schema.yaml's first violation as one line naming the key (with the closest known key
    for an unknown one), where Snakemake's own validate prints the whole schema after it; '' when there is none."""
    import jsonschema

    from bench.schema import safe_load

    schema = safe_load(Path(workflow.basedir, "workflows/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.path)))
    if not errors:
        return ""
    err = errors[0]
    unknown = [k for k in err.instance if k not in schema["properties"]] \
        if err.validator == "additionalProperties" else []
    hints = [ex.did_you_mean(str(key), schema["properties"]) for key in unknown]
    where = "/".join(map(str, err.absolute_path)) or "top level"
    return (f"workflow config (workflows/config.yaml, --config): at {where}: {err.message}"
            + "".join(f"; {hint}" for hint in hints if hint))


try:  # a key given twice in the config file: Snakemake's loader would keep the last one without a word
    from bench.schema import load as load_yaml

    load_yaml(Path(workflow.basedir, "workflows/config.yaml"))
except BenchError as err:
    raise WorkflowError(str(err)) from None
if problem := config_problem(config):
    raise WorkflowError(problem)
config["download"] = str(config["download"]).lower() in ("true", "1")  # --config download=true arrives as a string
config["replace_reports"] = str(config.get("replace_reports", False)).lower() in ("true", "1")
REPLACE = " --replace" if config["replace_reports"] else ""

try:
    load_claims()
    PROFILE = config["profile"]
    ex.profile_settings(PROFILE)
    SEEDS = ex.seeds(PROFILE, config["seeds"])
    TARGETS = targets(PROFILE)
    MEASUREMENTS = [m for m, (paper, model) in det.measurements().items() if not det.missing_reason(paper, model)]
    if config["only"]:
        patterns = [p.strip() for p in config["only"].split(",") if p.strip()]
        known = TARGETS + MEASUREMENTS
        TARGETS = [e for e in TARGETS if any(fnmatch.fnmatchcase(e, p) for p in patterns)]
        MEASUREMENTS = [m for m in MEASUREMENTS if any(fnmatch.fnmatchcase(m, p) for p in patterns)]
        if not TARGETS and not MEASUREMENTS:
            hint = ex.did_you_mean(patterns[0], known) if patterns else ""
            raise BenchError(f"only={config['only']!r} matches no experiment or model measurement of the {PROFILE} profile"
                             + (f"; {hint}" if hint else ""))
except BenchError as err:
    raise WorkflowError(str(err)) from None

RESULTS = f"{config['results']}/{PROFILE}"
RUNS = [f"{RESULTS}/runs/{e}/seed{s}.json" for e in TARGETS for s in SEEDS]
MODEL_FILES = [f"{RESULTS}/models/{m}.json" for m in MEASUREMENTS]
REPORT_MANIFEST = f"{RESULTS}/reports.json"  # the final target (reports/ is committed, results/ is not)
AUDIT_DONE = f"{RESULTS}/audit.txt"  # what `bench audit` said (reports/audit.md is committed: not an output)
def hold_results_lock(results: str):
    """One workflow at a time per results folder. A second `snakemake` on the same folder would otherwise see the
    running jobs' outputs as incomplete (IncompleteFilesException, whose advice, --rerun-incomplete, would start the
    running jobs a second time). A POSIX lock on <results>/.workflow.lock, held while this process lives (released
    by the kernel when it ends, however it ends; not inherited by the warm worker or the jobs). The jobs Snakemake
    starts for a cluster or a group parse this file again in their own mode, and take no lock."""
    import fcntl
    import os
    import time

    from snakemake_interface_executor_plugins.settings import ExecMode

    if workflow.exec_mode != ExecMode.DEFAULT:
        return None
    try:
        Path(results).mkdir(parents=True, exist_ok=True)
        handle = open(f"{results}/.workflow.lock", "a+", encoding="utf-8")
    except OSError:
        return None  # a folder that cannot be written: the first job that writes there says so, in one line
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        raise WorkflowError(f"{results}: a workflow is already running on this results folder ({holder}); wait for it "
                            "to end (`bench status` follows its jobs) or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"snakemake process {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return handle


RESULTS_LOCK = hold_results_lock(RESULTS)
# With --use-conda the rule's conda environment provides python; otherwise the interpreter running Snakemake.
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if USE_CONDA else shlex.quote(sys.executable)
# (braces doubled twice: once for this f-string, once for the rules' shell formatting)
BENCH = f"PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}} {PYTHON} -m bench"
CONDA_ENV = "../../envs/environment.yaml"


wildcard_constraints:
    experiment="[A-Za-z0-9_.-]+",
    measurement="[A-Za-z0-9_.-]+",
    dataset="[a-z0-9_]+",
    seed="[0-9]+",


# On a cluster the cheap bookkeeping rules run where Snakemake runs, not as cluster jobs.
localrules: mlflow_setup, fetch_dataset, check_dataset, aggregate, report, audit, summary
