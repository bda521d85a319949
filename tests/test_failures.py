"""Jobs that fail: retried with more memory and time, then recorded as FAILED with the error, which the report
shows; `bench failed` lists (and deletes) them. And the GPU slots that spread jobs over a machine's GPUs."""

import json
import os
import subprocess
import sys

import pytest
from test_resume import BENCH
from test_workflow import SNAKEMAKE

from bench import BenchError
from bench.methods.training import FAULT_ENV
from bench.run import gpus


@pytest.mark.slow
def test_a_job_that_fails_every_attempt_is_recorded_and_reported(tmp_path):
    experiment = "ma-cifar10-vgg8-backprop"
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
            "--config",
            "profile=smoke",
            f"only={experiment}",
            "retries=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, FAULT_ENV: "raise:1"},
    )
    log = proc.stdout + proc.stderr
    # the DAG goes on to the report and the audit, then its last job says what failed, and the workflow exits 1
    assert proc.returncode == 1, log[-3000:]
    assert "Error in rule summary" in log and "1 FAILED run(s) in results/smoke:" in log
    assert f"results/smoke/runs/{experiment}/seed0.json: InjectedFault: fault injected" in log
    assert "1 run(s) failed for good" in log and (tmp_path / "reports/audit.md").exists()
    assert "Trying to restart job" in log  # the first attempt failed and was retried
    result = json.loads((tmp_path / "results/smoke/runs" / experiment / "seed0.json").read_text())
    assert result["status"] == "FAILED" and "InjectedFault: fault injected" in result["error"]
    report = (tmp_path / "reports/smoke/ma.md").read_text()
    assert "FAILED [" in report and "InjectedFault: fault injected" in report

    listed = subprocess.run(
        [*BENCH, "failed", "--profile", "smoke", "--results", str(tmp_path / "results"), "--delete"],
        capture_output=True,
        text=True,
    )
    assert experiment in listed.stdout and "1 failed runs deleted" in listed.stderr
    assert not (tmp_path / "results/smoke/runs" / experiment / "seed0.json").exists()


def test_gpu_slots_fill_free_gpus_first_and_are_exclusive(tmp_path):
    try:
        assert gpus.claim(2, 2, lock_dir=tmp_path) == (0, 0)
        assert gpus.claim(2, 2, lock_dir=tmp_path) == (1, 0)  # the free GPU before sharing GPU 0
        assert gpus.claim(2, 2, lock_dir=tmp_path) == (0, 1)
        assert gpus.claim(2, 2, lock_dir=tmp_path) == (1, 1)
        with pytest.raises(BenchError, match=r"no 1 free GPU slot\(s\) on one GPU among 2 GPUs x 2 slots"):
            gpus.claim(2, 2, wait_s=0.2, lock_dir=tmp_path)
    finally:
        gpus.release_all()
    assert gpus.claim(2, 2, lock_dir=tmp_path) == (0, 0)  # released
    gpus.release_all()


def test_a_large_job_takes_a_whole_gpu_and_small_ones_share(tmp_path):
    try:
        assert gpus.claim(2, 2, lock_dir=tmp_path, need=2) == (0, 0)  # large: both slots of GPU 0
        assert gpus.claim(2, 2, lock_dir=tmp_path) == (1, 0)  # small jobs go to GPU 1 and share it
        assert gpus.claim(2, 2, lock_dir=tmp_path) == (1, 1)
        with pytest.raises(BenchError, match="no 2 free GPU slot"):
            gpus.claim(2, 2, wait_s=0.2, lock_dir=tmp_path, need=2)  # no GPU is wholly free
        with pytest.raises(BenchError, match="between 1 and slots per GPU"):
            gpus.claim(2, 2, lock_dir=tmp_path, need=3)
    finally:
        gpus.release_all()


def test_the_workflow_packs_jobs_by_the_plan(tmp_path):
    from test_workflow import snakemake

    small, large = "karimi-fashion_mnist-lenet-backprop-sgd", "cruciata-cifar10-vgg11-backprop"
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "jobs": [
                    {"experiment": small, "seconds": 60, "macs": 2e6},
                    {"experiment": large, "seconds": 600, "macs": 1.5e8},
                ]
            }
        )
    )
    proc = snakemake(
        tmp_path,
        "-n",
        "-p",
        "--config",
        "profile=smoke",
        f"only={small},{large}",
        f"plan={plan}",
        "gpus=2",
        "slots_per_gpu=4",
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-2000:]
    commands = {e: next(line for line in log.splitlines() if "bench run" in line and e in line) for e in (small, large)}
    assert "--gpus 2 --slots-per-gpu 4 --gpu-slots 1" in commands[small]
    assert "--gpus 2 --slots-per-gpu 4 --gpu-slots 4" in commands[large]


def test_a_killed_job_frees_its_gpu_slot(tmp_path):
    code = (
        f"import os, sys; sys.path.insert(0, {str(os.getcwd())!r}); from bench.run import gpus; "
        "print(gpus.use_one_gpu(1, 1), os.environ['CUDA_VISIBLE_DEVICES'], flush=True); "
        "import time; time.sleep(60)"
    )  # a job holding its slot until the test kills it
    env = {**os.environ, "BENCH_GPU_LOCKS": str(tmp_path)}
    job = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert job.stdout.readline().split() == ["0", "0"]
        with pytest.raises(BenchError):
            gpus.claim(1, 1, wait_s=0.2, lock_dir=tmp_path)  # held by the job
    finally:
        job.kill()
        job.wait()
    assert gpus.claim(1, 1, wait_s=2, lock_dir=tmp_path) == (0, 0)  # SIGKILL released it
    gpus.release_all()
