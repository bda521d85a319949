"""One run per (profile, experiment, seed): two concurrent starts train once, a finished seed is not retrained
unless forced (and then its MLflow run is replaced, not doubled), and a terminated run ends KILLED in MLflow.

No ordering here depends on the machine's speed: a run that must still be going when the test acts is held before
its epoch 2 by $BENCH_FAULT=hold:DIR (bench/methods/training.py: it creates DIR/waiting-epoch2.<host>.<pid> once its
epoch 1 is trained, logged and checkpointed, and waits for DIR/epoch2), and the test acts when it sees that file.
The deadlines are hang guards only."""

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


def bench(tmp_path, *args, wait=True, fault=None):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}
    env.pop("BENCH_WORKER", None)
    env.pop("BENCH_FAULT", None)
    if fault:
        env["BENCH_FAULT"] = fault
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


def held_before_epoch_2(folder: Path) -> bool:
    return any(folder.glob("waiting-epoch2.*"))


def release(folder: Path, epochs: int):
    """Open every gate of a run held with hold:DIR (epochs 2 .. `epochs`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(2, epochs + 1):
        (folder / f"epoch{k}").touch()


def wait_for(seen, proc, what: str, guard_s: float = 600):
    """Poll until `seen()` while `proc` runs; `guard_s` only stops a hung test, it orders nothing."""
    deadline = time.monotonic() + guard_s
    while not seen():
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {guard_s:g} s"
        time.sleep(0.02)  # polling for the event itself, not a wait that stands for it


@pytest.mark.slow
def test_two_starts_of_one_seed_train_once_and_a_finished_seed_is_kept(tmp_path):
    from bench import experiments as ex

    held = tmp_path / "held"
    first = bench(tmp_path, wait=False, fault=f"hold:{held}")  # trains its epoch 1, then waits for held/epoch2
    try:
        wait_for(lambda: held_before_epoch_2(held), first, "the first run held before its epoch 2")
        lock = tmp_path / "results/smoke/runs" / EID / ".seed0.json.lock"
        assert lock.read_text().startswith(f"pid {first.pid} ")  # the first holds the lock and cannot finish
        code, out, err = bench(tmp_path)
        assert code == 2 and f"already being trained by pid {first.pid} " in err and "Traceback" not in err, err
    finally:
        release(held, ex.config(ex.get(EID), "smoke")["epochs"])
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
    from bench import experiments as ex

    assert ex.config(ex.get(EID), "smoke")["epochs"] > 1
    # held before epoch 2, after epoch 1's checkpoint, and never released: the signal lands while the run runs,
    # with its checkpoint written, however fast or slow this machine is
    held = tmp_path / "held"
    proc = bench(tmp_path, wait=False, fault=f"hold:{held}")
    ckpt = tmp_path / "results/smoke/runs" / EID / "seed0.ckpt.pt"  # written after each epoch, in the run
    try:
        wait_for(lambda: held_before_epoch_2(held), proc, "the run held before its epoch 2")
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "bench: interrupted" in err and "Traceback" not in err, err  # 128 + SIGTERM
    (run,) = runs(tmp_path)
    assert run.info.status == "KILLED" and run.info.end_time
    assert not (tmp_path / "results/smoke/runs" / EID / "seed0.json").exists() and ckpt.exists()
    # the resumed run says so in its log, in the same MLflow run, which then finishes
    code, out, err = bench(tmp_path)
    assert code == 0 and f"{EID} seed 0: resumed from epoch 1 (" in err and run.info.run_id in err, err
    (again,) = runs(tmp_path)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
