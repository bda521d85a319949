"""One run per (profile, experiment, seed): two concurrent starts train once, a finished seed is not retrained
unless forced (and then its MLflow run is replaced, not doubled), and a terminated run ends KILLED in MLflow."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EID = "cruciata-mnist-vgg11-backprop"
ROOT = Path(__file__).resolve().parents[1]


def bench(tmp_path, *args, wait=True):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}
    env.pop("BENCH_WORKER", None)
    cmd = [sys.executable, "-m", "bench", "run", "-e", EID, "--profile", "smoke", "--threads", "1", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def runs(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith("layerwise-bench/smoke/")]
    return client.search_runs(ids, max_results=100) if ids else []


@pytest.mark.slow
def test_two_starts_of_one_seed_train_once_and_a_finished_seed_is_kept(tmp_path):
    first = bench(tmp_path, wait=False)
    time.sleep(0.5)
    deadline = time.time() + 120  # the second start once the first holds the lock
    lock = tmp_path / "results/smoke/runs" / EID / ".seed0.json.lock"
    while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    code, out, err = bench(tmp_path)
    assert code == 2 and "already being trained by pid" in err and "Traceback" not in err, err
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert len(runs(tmp_path)) == 1
    result = json.loads((tmp_path / "results/smoke/runs" / EID / "seed0.json").read_text())
    # a finished seed: not trained again
    code, out, err = bench(tmp_path)
    assert code == 0 and "already FINISHED" in out and "--force" in out
    assert len(runs(tmp_path)) == 1
    # forced: trained again, the old MLflow run superseded and deleted, one live run
    code, out, err = bench(tmp_path, "--force")
    assert code == 0, err
    live = runs(tmp_path)
    new = json.loads((tmp_path / "results/smoke/runs" / EID / "seed0.json").read_text())
    assert [r.info.run_id for r in live] == [new["mlflow"]["run_id"]] != [result["mlflow"]["run_id"]]
    from mlflow.tracking import MlflowClient

    old = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result["mlflow"]["run_id"])
    assert old.info.lifecycle_stage == "deleted" and old.data.tags["superseded_by"] == new["mlflow"]["run_id"]


@pytest.mark.slow
def test_a_terminated_run_is_killed_in_mlflow(tmp_path):
    proc = bench(tmp_path, wait=False)
    ckpt = tmp_path / "results/smoke/runs" / EID / "seed0.ckpt.pt"  # written after each epoch, in the run
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "bench: interrupted" in err and "Traceback" not in err, err
    (run,) = runs(tmp_path)
    assert run.info.status == "KILLED" and run.info.end_time
    assert not (tmp_path / "results/smoke/runs" / EID / "seed0.json").exists() and ckpt.exists()
    # the resumed run says so in its log, in the same MLflow run, which then finishes
    code, out, err = bench(tmp_path)
    assert code == 0 and f"{EID} seed 0: resumed from epoch" in err and run.info.run_id in err, err
    (again,) = runs(tmp_path)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
