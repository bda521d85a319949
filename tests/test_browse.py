"""Browsing: `bench ui` serves a finished smoke store on 127.0.0.1 only, and its REST API shows every run once,
with its tags, params and metrics."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import SMALL_DAG_EXPERIMENTS as EXPERIMENTS
from conftest import SMALL_DAG_SEEDS as SEEDS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def other_address() -> str | None:
    """An address of this machine that is not the loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: only picks the outgoing interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@pytest.mark.slow
def test_the_mlflow_ui_serves_every_run_once_on_localhost_only(small_dag):
    tmp_path = small_dag.folder  # the session's small smoke DAG (conftest.small_dag), read only
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench", "ui", "--port", str(port), "--store", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600  # a hang guard, not a speed check: a server that never answers fails
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-2000:]
                assert time.monotonic() < deadline, "mlflow server did not come up in 600 s"
                time.sleep(0.2)  # polling GET /health: the server offers no event to wait on
        exps = post(port, "experiments/search", {"max_results": 100})["experiments"]
        ids = [e["experiment_id"] for e in exps if e["name"].startswith("layerwise-bench/smoke/")]
        runs = post(port, "runs/search", {"experiment_ids": ids, "max_results": 1000})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        assert sorted((t["experiment"], t["seed"]) for t in tags) == sorted(
            (e, str(s)) for e in EXPERIMENTS for s in range(SEEDS)
        )
        for run, tag in zip(runs, tags):
            result = json.loads(
                (tmp_path / "results/smoke/runs" / tag["experiment"] / f"seed{tag['seed']}.json").read_text()
            )
            assert run["info"]["run_id"] == result["mlflow"]["run_id"] and run["info"]["status"] == "FINISHED"
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            assert params["experiment"] == tag["experiment"] and params["epochs"] == str(result["config"]["epochs"])
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert metrics["final_test_accuracy"] == pytest.approx(result["metrics"]["test_accuracy"])
        addr = other_address()
        if addr:  # bound to the loopback only: another address of this machine is refused
            with pytest.raises(OSError):
                socket.create_connection((addr, port), timeout=3).close()
    finally:
        server.terminate()
        server.wait(timeout=120)  # MLflow's server and its workers take their time to stop on a busy machine
