"""A real SLURM run: a single-node SLURM on this machine (tests/slurm_cluster.py), three smoke experiments through
the repository's SLURM execution profile (snakemake-executor-plugin-slurm), their result files and MLflow runs.

Opt-in on a workstation (it installs system packages and starts daemons): BENCH_SLURM_TEST=1. CI sets it.

Its own workflow, not a part of tests/test_tracking_server.py's SLURM run (which shares the cluster, started once:
tests/cluster_fixtures.py): this one proves the default store, the SQLite file in the working directory, from jobs
that SLURM starts, with no error on any run, and the Learn & Drop and greedy layer-wise methods through SLURM; that
one runs its 16 jobs on a tracking server that it takes down while they train.
"""

import json
import os
import subprocess
import time

import pytest
from conftest import REPO
from test_workflow import SNAKEMAKE

EXPERIMENTS = [
    "ma-cifar10-vgg8-backprop",
    "cruciata-mnist-vgg11-learn_drop",
    "karimi-fashion_mnist-lenet-greedy_layerwise",
]

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("BENCH_SLURM_TEST") != "1",
        reason="opt-in: installs and starts SLURM on this machine; set BENCH_SLURM_TEST=1 (CI does)",
    ),
    pytest.mark.slow,
]


def test_smoke_experiments_run_through_the_slurm_profile(tmp_path, slurm):
    up = slurm
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "--directory",
            str(tmp_path),
            "--workflow-profile",
            str(REPO / "workflows/profiles/slurm"),
            "--config",
            "profile=smoke",
            f"only={','.join(EXPERIMENTS)}",
            "device=cpu",
            # this machine's cluster: its partition, no accounts, CPU only; squeue for status (no accounting database)
            "--default-resources",
            "slurm_partition=debug",
            "runtime=10",
            "mem_mb=2000",
            "cpus_per_task=1",
            "--set-resources",
            "train:gpu=0",
            "--slurm-no-account",
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--seconds-between-status-checks",
            "3",
            "--latency-wait",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    took = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    submitted = [line for line in log.splitlines() if "has been submitted with SLURM jobid" in line]
    assert len(submitted) == len(EXPERIMENTS)  # one SLURM job per training run; bookkeeping rules run locally
    for experiment in EXPERIMENTS:
        result = json.loads((tmp_path / "results/smoke/runs" / experiment / "seed0.json").read_text())
        assert result["status"] == "FINISHED" and result["mlflow"]["error"] is None

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith("layerwise-bench/smoke/")]
    runs = client.search_runs(ids)
    assert sorted(r.data.tags["experiment"] for r in runs) == sorted(EXPERIMENTS)
    assert all(r.info.status == "FINISHED" and "final_test_accuracy" in r.data.metrics for r in runs)
    assert (tmp_path / "reports/smoke/index.md").exists()
    print(f"SLURM up in {up:.0f} s; {len(EXPERIMENTS)} experiments through SLURM in {took:.0f} s")
