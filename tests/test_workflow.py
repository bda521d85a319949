"""The Snakemake DAG end to end: a real smoke run of a few experiments, then a re-run that trains nothing."""
import csv
import re
import shutil
import subprocess
import sys

import pytest

from bench.run.targets import targets
from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def snakemake(workdir, *args, timeout=600):
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True,
                          timeout=timeout)


def job_counts(output: str) -> dict:
    """The 'Job stats' table Snakemake prints: rule -> number of jobs."""
    block = output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def test_paper_profile_dry_run_lists_every_experiment_and_seed(tmp_path):
    proc = snakemake(tmp_path, "-n", "--config", "profile=paper")
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train"] == len(targets("paper")) * 3
    assert counts["mlflow_setup"] == counts["aggregate"] == counts["report"] == 1


def test_unknown_profile_stops_the_workflow(tmp_path):
    proc = snakemake(tmp_path, "-n", "--config", "profile=tiny")
    assert proc.returncode != 0 and "unknown profile 'tiny'" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
    only = "cruciata-mnist-vgg11-backprop,ma-cifar10-resnet18_r4-backprop"
    config = ["--config", "profile=smoke", "seeds=2", f"only={only}"]
    proc = snakemake(tmp_path, "--cores", "2", *config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert job_counts(log)["train"] == 4

    runs = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "results/smoke/runs").rglob("*.json"))
    assert runs == [f"results/smoke/runs/{e}/seed{s}.json" for e in sorted(only.split(",")) for s in (0, 1)]
    with open(tmp_path / "results/smoke/cells.csv", newline="") as f:
        cells = {r["id"]: r for r in csv.DictReader(f)}
    acc = cells["cruciata.1.vgg-11.mnist.sgd.a"]
    assert acc["status"] == "MEASURED" and acc["n"] == "2" and acc["sd"] != "" and len(acc["sources"].split()) == 2
    assert cells["ma.V.resnet18-r4.global"]["status"] == "MEASURED"
    assert cells["ma.V.resnet18-r4.layer-wise"]["status"] == "MISSING"

    report = (tmp_path / "reports/smoke/cruciata.md").read_text()
    assert report.startswith("> **Smoke profile: these numbers say nothing about the papers.**")
    assert "| VGG-11 / MNIST" in report

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exps = {e.name: e.experiment_id for e in client.search_experiments()}
    assert {f"layerwise-bench/smoke/{p}" for p in ("ma", "karimi", "bhyravabhottla", "cruciata")} <= set(exps)
    mlflow_runs = client.search_runs([exps["layerwise-bench/smoke/cruciata"], exps["layerwise-bench/smoke/ma"]])
    assert sorted((r.data.tags["experiment"], r.data.tags["seed"]) for r in mlflow_runs) == \
        [(e, s) for e in sorted(only.split(",")) for s in ("0", "1")]

    again = snakemake(tmp_path, "-n", *config)  # nothing changed: nothing to train
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # a fresh clone has the committed reports but no results: the whole DAG runs again
    shutil.rmtree(tmp_path / "results")
    shutil.rmtree(tmp_path / ".snakemake")
    fresh = snakemake(tmp_path, "-n", *config)
    assert fresh.returncode == 0 and job_counts(fresh.stdout + fresh.stderr)["train"] == 4


@pytest.mark.parametrize("setting,message", [
    ("threads=0", "0 is less than the minimum of 1"),
    ("gpus=-1", "-1 is less than the minimum of 0"),
    ("device=gpu7", "does not match"),
    ("colour=red", "'colour' was unexpected"),
])
def test_bad_workflow_config_is_refused_naming_the_field(tmp_path, setting, message):
    proc = snakemake(tmp_path, "-n", "--config", setting)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in log and "config" in log.lower()


def test_a_plan_sets_each_jobs_runtime(tmp_path):
    experiment = "ma-cifar10-vgg8-backprop"
    plan = tmp_path / "plan.json"
    plan.write_text('{"jobs": [{"experiment": "%s", "seconds": 600}]}' % experiment)
    proc = snakemake(tmp_path, "-n", "--config", "profile=smoke", f"only={experiment}", f"plan={plan}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-2000:]
    assert "runtime=15," in log  # 1.5 x 10 minutes


def test_a_missing_dataset_stops_a_real_data_workflow_before_any_training(tmp_path):
    proc = snakemake(tmp_path, "--cores", "1", "--config", "profile=check", f"data_root={tmp_path / 'no-data'}",
                     "only=cruciata-cifar10-vgg11-backprop,cruciata-mnist-vgg11-backprop")
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Error in rule check_dataset" in log
    line = next(l for l in log.splitlines() if l.startswith("bench: error: dataset"))
    assert f"not found under {tmp_path / 'no-data'}" in line and "bench data download" in line
    assert "rule train:" not in log and not (tmp_path / "results/check/runs").exists()  # no job trained
