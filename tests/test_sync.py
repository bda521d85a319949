"""`bench sync` rebuilds the MLflow store from the result files: a deleted store, a job that never reached its
store, points a store lost, results merged from another checkout; a second sync adds nothing. And a store that
cannot be used (unreachable, not MLflow) costs a job one line on stderr, never the run."""

import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import pytest

from bench.run import runner
from bench.run.results import run_path
from bench.run.sync import sync

EXPERIMENT = "karimi-cifar10-lenet-backprop-adam"  # the cheapest smoke run: 8 epochs of a LeNet on 128 images
BENCH = [sys.executable, "-m", "bench"]
# A store that cannot be used: the client still makes all of its retries (track.HTTP_RETRIES' count, a user's own
# setting wins), without the backoff between them (2 + 4 s and jitter per call, three calls a case), which no
# assertion here is about: the outage of a server for longer than that window is tests/test_tracking_server.py's.
NO_BACKOFF = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}


def store(path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{path}")


def runs_of(client) -> dict:
    """(experiment, seed) -> run, over every live run of the smoke experiments; fails on a duplicate."""
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith("layerwise-bench/smoke/")]
    out = {}
    for r in client.search_runs(ids, max_results=1000) if ids else []:
        key = (r.data.tags["experiment"], int(r.data.tags["seed"]))
        assert key not in out, f"two runs for {key}"
        out[key] = r
    return out


def histories(client, run) -> dict:
    return {
        k: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, k))
        for k in run.data.metrics
    }


def points(client) -> int:
    return sum(len(h) for r in runs_of(client).values() for h in histories(client, r).values())


def train(workdir, monkeypatch, seed: int, uri: str | None = None) -> dict:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri or f"sqlite:///{workdir / 'mlflow.db'}")
    options = runner.RunOptions(out=run_path("smoke", EXPERIMENT, seed, workdir / "results"), threads=1, progress=False)
    return runner.run(EXPERIMENT, seed, "smoke", options)


@pytest.mark.slow
def test_a_deleted_store_is_rebuilt_as_the_live_jobs_logged_it(workdir, monkeypatch):
    live = train(workdir, monkeypatch, 0)
    assert live["mlflow"]["error"] is None and live["mlflow"]["unlogged_points"] == 0
    assert all("timestamp_ms" in e for e in live["epochs"])
    first = sync("smoke", workdir / "results")
    assert (first["created"], first["points"], first["complete"]) == (0, 0, 1)  # a live run is whole already

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'rebuilt.db'}")  # a store lost, or moved
    counts = sync("smoke", workdir / "results")
    assert (counts["created"], counts["repointed"]) == (1, 1)
    live_store, new_store = store(workdir / "mlflow.db"), store(workdir / "rebuilt.db")
    (old,), (new,) = runs_of(live_store).values(), runs_of(new_store).values()
    assert new.info.run_name == old.info.run_name and new.info.status == old.info.status == "FINISHED"
    assert new.info.start_time == old.info.start_time
    assert new.data.params == old.data.params
    assert {k: v for k, v in new.data.tags.items() if k != "synced_from"} == old.data.tags
    assert new.data.tags["synced_from"] == old.info.run_id
    # every point at the step and time the job logged it: the per-epoch chart is the live one
    assert histories(new_store, new) == histories(live_store, old)
    assert counts["points"] == sum(len(h) for h in histories(live_store, old).values())
    assert [(i.dataset.name, i.dataset.digest) for i in new.inputs.dataset_inputs] == [
        (i.dataset.name, i.dataset.digest) for i in old.inputs.dataset_inputs
    ]
    result = json.loads(run_path("smoke", EXPERIMENT, 0, workdir / "results").read_text())
    assert (
        result["mlflow"]["run_id"] == new.info.run_id and result["mlflow"]["synced"]["from_run_id"] == old.info.run_id
    )
    assert {k: v for k, v in result.items() if k != "mlflow"} == {k: v for k, v in live.items() if k != "mlflow"}

    again = sync("smoke", workdir / "results")
    assert (again["created"], again["points"], again["params"], again["tags"], again["statuses"]) == (0, 0, 0, 0, 0)


@pytest.mark.slow
def test_lost_points_are_filled_exactly_and_once(workdir, monkeypatch):
    train(workdir, monkeypatch, 0)
    full = points(store(workdir / "mlflow.db"))
    with sqlite3.connect(workdir / "mlflow.db") as db:  # a store that lost epochs 3-5 of train_loss and test_accuracy
        lost = db.execute(
            "DELETE FROM metrics WHERE key IN ('train_loss', 'test_accuracy') AND step BETWEEN 3 AND 5"
        ).rowcount
        db.execute("UPDATE runs SET status = 'RUNNING', end_time = NULL")  # and the job's end
    assert lost == 6 and points(store(workdir / "mlflow.db")) == full - lost
    counts = sync("smoke", workdir / "results")
    assert (counts["points"], counts["statuses"], counts["completed"], counts["created"]) == (lost, 1, 1, 0)
    assert points(store(workdir / "mlflow.db")) == full
    (run,) = runs_of(store(workdir / "mlflow.db")).values()
    assert run.info.status == "FINISHED"
    assert sync("smoke", workdir / "results")["points"] == 0


@pytest.mark.slow
def test_results_copied_from_another_checkout_merge_without_duplicates(workdir, monkeypatch):
    here, there = workdir / "here", workdir / "there"
    for checkout, seeds in ((here, (0,)), (there, (0, 1))):  # seed 0 ran on both machines; seed 1 only there
        checkout.mkdir()
        monkeypatch.chdir(checkout)
        for seed in seeds:
            train(checkout, monkeypatch, seed)
    monkeypatch.chdir(here)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{here / 'mlflow.db'}")
    seed1 = run_path("smoke", EXPERIMENT, 1, "results")
    seed1.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_path("smoke", EXPERIMENT, 1, there / "results"), seed1)  # copy `there`'s new results in
    counts = sync("smoke", here / "results")
    assert (counts["files"], counts["created"], counts["complete"]) == (2, 1, 1)
    assert sorted(runs_of(store(here / "mlflow.db"))) == [(EXPERIMENT, 0), (EXPERIMENT, 1)]
    # copied again (the repointed file overwritten by the original): still the same run, found by its origin
    shutil.copy(run_path("smoke", EXPERIMENT, 1, there / "results"), seed1)
    again = sync("smoke", here / "results")
    assert (again["created"], again["points"], again["repointed"]) == (0, 0, 1)
    assert len(runs_of(store(here / "mlflow.db"))) == 2


class NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<!DOCTYPE html><html><body>nothing here</body></html>")

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def not_mlflow():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://user:s3cret@127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["unreachable", "not MLflow"])
def test_a_store_that_cannot_be_used_costs_one_line_never_the_run(workdir, kind, not_mlflow):
    uri = {"unreachable": f"http://user:s3cret@127.0.0.1:{closed_port()}", "not MLflow": not_mlflow}[kind]
    proc = subprocess.run(
        [*BENCH, "run", "-e", EXPERIMENT, "--profile", "smoke", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **NO_BACKOFF, "MLFLOW_TRACKING_URI": uri},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if "mlflow" in line.lower()]
    why = {"unreachable": "unreachable (connection refused)", "not MLflow": "not an MLflow tracking server"}[kind]
    assert len(said) == 1 and why in said[0] and "***@127.0.0.1" in said[0], proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    result_path = run_path("smoke", EXPERIMENT, 0, workdir / "results")
    result = json.loads(result_path.read_text())
    assert result["status"] == "FINISHED" and result["mlflow"]["run_id"] is None and why in result["mlflow"]["error"]
    assert "s3cret" not in result_path.read_text()
    # the store that works: sync logs the run
    sync_proc = subprocess.run(
        [*BENCH, "sync", "--profile", "smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'ok.db'}"},
    )
    assert sync_proc.returncode == 0, sync_proc.stderr
    (run,) = runs_of(store(workdir / "ok.db")).values()
    assert run.info.status == "FINISHED" and len(histories(store(workdir / "ok.db"), run)["train_loss"]) == 8
    # sync against the bad store: one line, exit 2
    bad = subprocess.run(
        [*BENCH, "sync", "--profile", "smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **NO_BACKOFF, "MLFLOW_TRACKING_URI": uri},
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and why in bad.stderr, bad.stderr
    assert "s3cret" not in bad.stderr
