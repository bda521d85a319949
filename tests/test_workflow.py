"""The Snakemake DAG end to end: a real smoke run of a few experiments, then a re-run that trains nothing."""

import base64
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SMALL_DAG_EXPERIMENTS, SMALL_DAG_SEEDS, small_dag_config
from helpers import result_file

from bench.run.targets import targets

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def snakemake(workdir, *args, timeout=600):
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, timeout=timeout
    )


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
def test_smoke_run_end_to_end(small_dag, tmp_path):
    """The session's small smoke DAG (conftest.small_dag: 4 experiments x 4 seeds): result files, cells with their
    seeds, reports, MLflow runs; a re-run that trains nothing; a fresh clone's (no results) that trains it all. It ran
    in a folder whose path holds a space, with the results, reports and data roots in it (issue 31)."""
    folder = small_dag.folder
    assert " " in str(folder) and f"results={folder / 'results'}" in small_dag_config(folder)
    experiments = sorted(SMALL_DAG_EXPERIMENTS)
    assert job_counts(small_dag.log)["train"] == len(experiments) * SMALL_DAG_SEEDS

    runs = sorted(p.relative_to(folder).as_posix() for p in (folder / "results/smoke/runs").rglob("seed*.json"))
    assert runs == [f"results/smoke/runs/{e}/seed{s}.json" for e in experiments for s in range(SMALL_DAG_SEEDS)]
    with open(folder / "results/smoke/cells.csv", newline="") as f:
        cells = {r["id"]: r for r in csv.DictReader(f)}
    acc = cells["cruciata.1.vgg-11.mnist.sgd.a"]
    assert acc["status"] == "MEASURED" and acc["n"] == str(SMALL_DAG_SEEDS) and acc["sd"] != ""
    assert len(acc["sources"].split()) == SMALL_DAG_SEEDS
    assert cells["ma.V.resnet18-r4.global"]["status"] == "MEASURED"
    assert cells["ma.V.resnet18-r4.layer-wise"]["status"] == "MISSING"

    # the committed reports are untouched (a restricted run is less full than theirs): its report goes beside them
    tracked = subprocess.run(
        ["git", "ls-files", "reports"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()  # what git holds (a partial report beside them is not)
    committed = {Path(p): (REPO / p).read_bytes() for p in tracked}
    assert {p: (folder / p).read_bytes() for p in committed} == committed
    beside = [p for p in (folder / "reports/smoke").glob("partial-*") if p.is_dir()]
    assert len(beside) == 1, beside
    report = (beside[0] / "cruciata.md").read_text()
    assert report.startswith("> **Smoke profile: these numbers say nothing about the papers.**")
    assert "| VGG-11 / MNIST" in report and "- **Restricted run:** `only=" in report

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exps = {e.name: e.experiment_id for e in client.search_experiments()}
    assert {f"layerwise-bench/smoke/{p}" for p in ("ma", "karimi", "bhyravabhottla", "cruciata")} <= set(exps)
    mlflow_runs = client.search_runs([exps["layerwise-bench/smoke/cruciata"], exps["layerwise-bench/smoke/ma"]])
    assert sorted((r.data.tags["experiment"], r.data.tags["seed"]) for r in mlflow_runs) == [
        (e, str(s)) for e in experiments if e.split("-")[0] in ("cruciata", "ma") for s in range(SMALL_DAG_SEEDS)
    ]

    again = snakemake(
        folder, "-n", *small_dag_config(folder)
    )  # nothing changed: nothing to train (a dry run changes nothing)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # a fresh clone has the committed reports but no results: the whole DAG runs again (on a copy of the folder)
    clone = tmp_path / "clone"
    shutil.copytree(folder, clone, ignore=shutil.ignore_patterns("results", ".snakemake"))
    fresh = snakemake(clone, "-n", *small_dag_config(clone))
    assert fresh.returncode == 0 and job_counts(fresh.stdout + fresh.stderr)["train"] == len(runs)


@pytest.mark.parametrize(
    "setting,message",
    [
        ("threads=0", "0 is less than the minimum of 1"),
        ("gpus=-1", "-1 is less than the minimum of 0"),
        ("device=gpu7", "does not match"),
        ("colour=red", "'colour' was unexpected"),
    ],
)
def test_bad_workflow_config_is_refused_naming_the_field(tmp_path, setting, message):
    proc = snakemake(tmp_path, "-n", "--config", setting)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in log and "config" in log.lower()


def test_a_plan_sets_each_jobs_runtime(tmp_path):
    experiment = "ma-cifar10-vgg8-backprop"
    plan = tmp_path / "plan.json"
    plan.write_text(f'{{"jobs": [{{"experiment": "{experiment}", "seconds": 600}}]}}')
    proc = snakemake(tmp_path, "-n", "--config", "profile=smoke", f"only={experiment}", f"plan={plan}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-2000:]
    assert "runtime=15," in log  # 1.5 x 10 minutes


def test_a_missing_dataset_stops_a_real_data_workflow_before_any_training(tmp_path):
    proc = snakemake(
        tmp_path,
        "--cores",
        "1",
        "--config",
        "profile=check",
        f"data_root={tmp_path / 'no-data'}",
        "only=cruciata-cifar10-vgg11-backprop,cruciata-mnist-vgg11-backprop",
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Error in rule check_dataset" in log
    line = next(row for row in log.splitlines() if row.startswith("bench: error: dataset"))
    assert f"not found under {tmp_path / 'no-data'}" in line and "bench data download" in line
    assert "rule train:" not in log and not (tmp_path / "results/check/runs").exists()  # no job trained


def test_a_seed_finished_by_bench_run_before_the_dag_is_not_trained_again(tmp_path):
    """Issue 31: a seed that `bench run` finished before the first `snakemake` (a result file valid for the
    experiment's config today, of which Snakemake has no record) is kept, although mlflow_setup, which the other
    seeds need, runs first and would make its input newer. One trained under another config is trained again (as is
    a FAILED one: bench.run.results.load's checks, then the status)."""
    done, other = "cruciata-mnist-vgg11-backprop", "ma-cifar10-vgg8-backprop"
    path = tmp_path / "results/smoke/runs" / done / "seed0.json"
    path.parent.mkdir(parents=True)

    def trained(result) -> list[str]:
        path.write_text(json.dumps(result))
        proc = snakemake(tmp_path, "-n", "--config", "profile=smoke", "seeds=1", f"only={done},{other}")
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-2000:]
        assert job_counts(log)["mlflow_setup"] == 1, log[-2000:]
        return sorted(set(re.findall(r"output: results/smoke/runs/([^/\s]+)/seed0\.json", log)))

    finished = result_file("smoke", done, metrics={"test_accuracy": 70.0, "train_time_s": 1.0})
    assert trained(finished) == [other]
    # Snakemake's record of it from an older version of the rule (another shell command and params): the valid
    # result is kept all the same (an upgrade of the suite trains nothing again), and the record is dropped
    key = f"results/smoke/runs/{done}/seed0.json"
    record = tmp_path / ".snakemake/metadata" / base64.urlsafe_b64encode(key.encode()).decode()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps(
            {
                "rule": "train",
                "shellcmd": "bench run --an-older-command",
                "code": "older",
                "params": ["older"],
                "input": [],
                "record_format_version": 6,
                "starttime": 0.0,
                "endtime": 1.0,
                "incomplete": False,
            }
        )
    )
    assert trained(finished) == [other]
    assert not record.exists()
    stale = json.loads(json.dumps(finished))
    stale["config"]["epochs"] += 1
    assert trained(stale) == sorted([done, other])
