# Shared by all rules: the config, validated; the profile; and the targets, derived from the registry.
import fnmatch
from functools import cache
import json
import math
from pathlib import Path
import shlex
import sys

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)  # use this checkout's bench package, installed or not
from bench import BenchError
from bench import experiments as ex
from bench.claims.registry import load_claims
from bench.run import deterministic as det
from bench.run.targets import targets
from snakemake.settings.types import DeploymentMethod

validate(config, "../schemas/config.schema.yaml")
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
        TARGETS = [e for e in TARGETS if any(fnmatch.fnmatchcase(e, p) for p in patterns)]
        MEASUREMENTS = [m for m in MEASUREMENTS if any(fnmatch.fnmatchcase(m, p) for p in patterns)]
        if not TARGETS and not MEASUREMENTS:
            raise BenchError(f"only={config['only']!r} matches no experiment or model measurement of the {PROFILE} profile")
except BenchError as err:
    raise WorkflowError(str(err)) from None

RESULTS = f"{config['results']}/{PROFILE}"
RUNS = [f"{RESULTS}/runs/{e}/seed{s}.json" for e in TARGETS for s in SEEDS]
MODEL_FILES = [f"{RESULTS}/models/{m}.json" for m in MEASUREMENTS]
REPORT_MANIFEST = f"{RESULTS}/reports.json"  # the final target (reports/ is committed, results/ is not)
AUDIT_DONE = f"{RESULTS}/audit.txt"  # what `bench audit` said (reports/audit.md is committed: not an output)
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
