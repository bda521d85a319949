"""The warm worker (bench/run/worker.py): a job run through it is the same job as one run in its own process; its exit
code, stdout and stderr reach the client; a cancelled client takes its child down; no worker means in-process."""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from bench.run import worker

EXPERIMENT = "karimi-fashion_mnist-lenet-backprop-sgd"


def bench(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sock") / "w.sock")
    proc = worker.start(path, parent_pid=os.getpid())
    yield path
    proc.terminate()
    proc.wait(timeout=30)
    assert not os.path.exists(path), "the worker removes its socket when it stops"


@pytest.mark.slow
def test_job_through_worker_equals_job_in_own_process(warm, workdir):
    own = bench("run", "-e", EXPERIMENT, "--profile", "smoke", "--out", "own.json", cwd=workdir, env={worker.ENV: ""})
    assert own.returncode == 0, own.stderr
    forked = bench(
        "run", "-e", EXPERIMENT, "--profile", "smoke", "--out", "forked.json", cwd=workdir, env={worker.ENV: warm}
    )
    assert forked.returncode == 0, forked.stderr
    a, b = (json.loads((workdir / name).read_text()) for name in ("own.json", "forked.json"))
    assert a["status"] == b["status"] == "FINISHED"
    for key in ("test_accuracy", "test_loss", "params_total", "macs_forward"):
        assert a["metrics"][key] == b["metrics"][key], key
    assert [e["train_loss"] for e in a["epochs"]] == [e["train_loss"] for e in b["epochs"]]
    # the forked child wrote to the client's working directory and MLflow store, with its own run
    assert b["mlflow"]["tracking_uri"] == f"sqlite:///{workdir / 'mlflow.db'}"
    assert a["mlflow"]["run_id"] != b["mlflow"]["run_id"] and b["mlflow"]["error"] is None


def test_errors_and_output_reach_the_client(warm, workdir):
    proc = bench("run", "-e", "ma-cifar10-vgg99-backprop", "--profile", "smoke", cwd=workdir, env={worker.ENV: warm})
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "bench: error: unknown experiment 'ma-cifar10-vgg99-backprop': did you mean "
        "'ma-cifar10-vgg19-backprop', 'ma-cifar100-vgg19-backprop' or "
        "'ma-cifar10-vgg8-backprop'? `bench experiments --all` lists them"
    )


def test_commands_other_than_run_and_measure_stay_in_process(warm, workdir):
    proc = bench(
        "config", "karimi-fashion_mnist-lenet-backprop-sgd", "--profile", "smoke", cwd=workdir, env={worker.ENV: warm}
    )
    assert proc.returncode == 0 and "lenet" in proc.stdout
    assert worker.forward(["config", "x"]) is None


def test_no_worker_or_a_stale_socket_runs_in_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(worker.ENV, str(tmp_path / "absent.sock"))
    assert worker.forward(["run", "-e", "x"]) is None
    stale = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()  # the file stays, nobody listens
    monkeypatch.setenv(worker.ENV, str(stale))
    assert worker.forward(["run", "-e", "x"]) is None
    assert "running in this process" in capsys.readouterr().err


def test_a_cancelled_client_kills_its_child():
    server, client = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the "job": runs until killed (and holds no copy of the client's end)
        client.close()
        time.sleep(60)  # a job that runs until the worker kills it: the test waits for the kill, not for this
        os._exit(0)
    done = threading.Thread(target=worker._supervise, args=(server, pid, {server}, threading.Lock()))
    done.start()
    client.close()  # Snakemake killed `bench run`
    done.join(timeout=10)
    assert not done.is_alive()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped by the supervisor


def test_the_exit_code_of_a_finished_child_is_sent():
    server, client = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    worker._supervise(server, pid, {server}, threading.Lock())
    assert struct.unpack("!i", client.recv(4))[0] == 3
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    server, client = socket.socketpair()
    worker._supervise(server, pid, {server}, threading.Lock())
    assert struct.unpack("!i", client.recv(4))[0] == -signal.SIGKILL  # a signal: sent as its negative


def test_a_job_killed_by_a_signal_kills_its_client_with_it(warm, workdir):
    """The client ends as the job's own process would have: killed by the same signal (a shell or Snakemake sees
    128 + 9 either way; a test that SIGKILLs a job sees returncode -9 either way)."""
    from bench.methods.training import FAULT_ENV

    proc = bench(
        "run",
        "-e",
        EXPERIMENT,
        "--profile",
        "smoke",
        "--out",
        "killed.json",
        cwd=workdir,
        env={worker.ENV: warm, FAULT_ENV: "kill:2"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (workdir / "killed.json").exists()
    shell = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m bench run -e {EXPERIMENT} --profile smoke --out killed.json; exit $?"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, worker.ENV: warm, FAULT_ENV: "kill:2"},
    )
    assert shell.returncode == 128 + signal.SIGKILL
