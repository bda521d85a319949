"""Progress a person can follow (issue 31): `bench run`'s start line and one kept line per epoch, its progress file,
`bench status` on a running DAG, job logs appended per attempt, and Ctrl-C / SIGTERM ending with one line.

No ordering depends on the machine's speed: a run that must still be going when the test acts is held before its
epoch 2 by $BENCH_FAULT=hold:DIR (bench/methods/training.py: DIR/waiting-epoch2.<host>.<pid> appears once its epoch 1
is trained, logged and checkpointed); the deadlines are hang guards only."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

EID = "cruciata-mnist-vgg11-backprop"  # 4 epochs in the smoke profile


def env_for(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_WORKER", "BENCH_PLAN", "BENCH_FAULT")}
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(REPO), **extra}


def wait_for(seen, proc, what: str, guard_s: float = 300):
    deadline = time.monotonic() + guard_s
    while not seen():
        assert proc.poll() is None, f"ended ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {guard_s:g} s"
        time.sleep(0.05)


def held(folder: Path) -> bool:
    return any(folder.glob("waiting-epoch2.*"))


def status(folder: Path, *args) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "status", "--profile", "smoke", "--only", EID, "--seeds", "1", *args],
        cwd=folder,
        env=env_for(folder),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def plan_file(folder: Path) -> Path:
    plan = folder / "plan.json"
    plan.write_text(json.dumps({"jobs": [{"experiment": EID, "seconds": 120}]}))
    return plan


def interrupted_once(text: str):
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert [line for line in text.splitlines() if "interrupted" in line] == ["bench: interrupted"], text


@pytest.mark.slow
def test_a_run_says_where_it_is_and_sigterm_ends_it_with_one_line(tmp_path):
    """The start line (device, data, epochs to run, the plan's ETA) and a kept line per epoch, with the progress bars
    on (as in a terminal); the progress file; SIGTERM to a job run by the warm worker (its client): one line, exit
    143, the file says interrupted. (A run in its own process: tests/test_run_once.py's terminated run.)"""
    from conftest import warm_worker_env

    gate = tmp_path / "held"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench",
                "run",
                "-e",
                EID,
                "--profile",
                "smoke",
                "--threads",
                "1",
                "--progress",
                "--plan",
                str(plan_file(tmp_path)),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env_for(tmp_path, BENCH_FAULT=f"hold:{gate}", **warm_worker_env()),
        )
    try:
        wait_for(lambda: held(gate), proc, "the run held before its epoch 2")
        text = log.read_text()
        start = next(line for line in text.splitlines() if line.startswith(f"{EID} seed 0 [smoke]: on "))
        assert "on cpu" in start and "mnist loaded (" in start and "4 epochs to run" in start, start
        assert "ETA 0:02:00 by the plan" in start, start
        assert f"\n{EID} seed 0: epoch 1/4, train loss " in text.replace("\r", "\n") and "ETA" in text, text
        progress = json.loads((tmp_path / "results/smoke/runs" / EID / ".seed0.progress.json").read_text())
        assert progress["state"] == "running" and progress["epoch"] == 1 and progress["epochs"] == 4
        assert progress["eta_s"] > 0 and progress["plan_seconds"] == 120
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, log.read_text()
    interrupted_once(log.read_text())
    progress = json.loads((tmp_path / "results/smoke/runs" / EID / ".seed0.progress.json").read_text())
    assert progress["state"] == "interrupted"


@pytest.mark.slow
def test_bench_status_follows_a_running_dag_and_ctrl_c_leaves_one_line_in_the_job_log(tmp_path):
    """A one-job smoke DAG through the warm worker, held after its epoch 1: `bench status` shows it running with its
    epoch and ETA; Ctrl-C of Snakemake (SIGINT to its process group, as a terminal sends it) leaves `bench:
    interrupted` once and no traceback in the job log, and status says stopped; a second run resumes it, appends
    to the same log after a second separator, and status says finished with nothing left."""
    target = f"results/smoke/runs/{EID}/seed0.json"
    config = ["--config", "profile=smoke", "seeds=1", f"only={EID}", f"plan={plan_file(tmp_path)}"]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "1",
        "--rerun-incomplete",
        target,
        *config,
    ]
    gate, out = tmp_path / "held", tmp_path / "snakemake.txt"
    with open(out, "w") as sink:
        dag = subprocess.Popen(
            cmd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env_for(tmp_path, BENCH_FAULT=f"hold:{gate}"),
        )
    try:
        wait_for(lambda: held(gate), dag, "the job held before its epoch 2")
        now = status(tmp_path)
        assert now.startswith("smoke: 1 running, 0 finished, 0 failed, 0 stopped, 0 to run"), now
        line = next(line for line in now.splitlines() if line.startswith(f"  {EID} seed 0: "))
        assert "epoch 1/4" in line and "ETA 0:" in line, now
        assert "what remains: " in now and "by the plan" in now, now
        # a second snakemake on the same results folder, even with --rerun-incomplete, is refused in one line
        # (before: IncompleteFilesException, whose advice would have started the running job a second time)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env_for(tmp_path))
        assert second.returncode != 0, second.stdout + second.stderr
        assert "a workflow is already running on this results folder (snakemake process " in second.stderr, (
            second.stderr
        )
        assert (
            "Incomplete" not in second.stdout + second.stderr
            and not (tmp_path / "results/smoke/runs" / EID / "seed0.json").exists()
        )
        os.killpg(dag.pid, signal.SIGINT)
        dag.wait(timeout=300)
    finally:
        if dag.poll() is None:
            os.killpg(dag.pid, signal.SIGKILL)
    assert dag.returncode != 0
    log = tmp_path / "results/smoke/logs" / EID / "seed0.log"
    first = log.read_text()
    assert first.startswith("===== attempt 1, ") and "4 epochs to run; ETA 0:02:00 by the plan" in first, first
    interrupted_once(first)
    assert "1 stopped" in status(tmp_path)

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env_for(tmp_path))
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    both = log.read_text()
    assert both.startswith(first) and both.count("===== attempt 1, ") == 2, both  # appended, one separator each
    assert f"{EID} seed 0: resumed from epoch 1" in both[len(first) :], both
    done = status(tmp_path)
    assert done.startswith("smoke: 0 running, 1 finished, 0 failed, 0 stopped, 0 to run"), done
    assert "what remains: nothing" in done


SCRIPT = """
import atexit, sys, time
from bench import cli

class Finalizer:
    def __del__(self):
        raise KeyboardInterrupt  # as Ctrl-C landing in a finalizer: Python says 'Exception ignored' and goes on

def during(args):
    Finalizer()  # collected at once
    time.sleep(60)  # the command goes on, unless the interrupt is delivered again

def after(args):
    atexit.register(lambda: Finalizer())  # at shutdown, once the command is done

cli.cmd_claims = {"during": during, "after": after}[sys.argv.pop(1)]
sys.argv = ["bench", "claims"]
raise SystemExit(cli.main())
"""


@pytest.mark.parametrize("when", ["during", "after"])
def test_ctrl_c_inside_a_finalizer_is_one_line_not_exception_ignored(tmp_path, when):
    """Ctrl-C that Python would report as 'Exception ignored in ...' (it lands in a finalizer, as in `bench report`):
    during a command it ends the command as any Ctrl-C; at shutdown, the process ends with the one line."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, when],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    interrupted_once(proc.stderr)


def test_bench_plan_tells_its_progress(monkeypatch):
    """bench plan hears of each step (job k of n) before it starts; on a terminal, one line rewritten in place."""
    from bench.cost import plan

    monkeypatch.setattr(plan, "targets", lambda profile: [EID, "karimi-fashion_mnist-lenet-backprop-sgd"])
    monkeypatch.setattr(
        plan, "job_cost", lambda exp, profile, **kw: {"experiment": exp.id, "paper": exp.paper, "units": 1e9}
    )  # the steps, not the costs
    heard = []
    found = plan.plan("smoke", rate=1e9, progress=lambda done, total, what: heard.append((done, total, what)))
    assert heard == [(0, 2, EID), (1, 2, "karimi-fashion_mnist-lenet-backprop-sgd")]
    assert len(found["jobs"]) == 2


def test_bench_status_reads_the_files_the_runs_write(tmp_path):
    """Each state from the files alone: a result FINISHED or FAILED, a progress file of a live process (running) or
    of a dead one (stopped), nothing (to run); what remains by the plan, a running job's ETA instead of its
    estimate."""
    import socket

    from bench.run.status import collect, describe

    runs = tmp_path / "results/smoke/runs" / EID
    runs.mkdir(parents=True)
    (runs / "seed0.json").write_text(json.dumps({"status": "FINISHED", "metrics": {"wall_time_s": 10.0}}))
    (runs / "seed3.json").write_text(json.dumps({"status": "FAILED", "error": "RuntimeError: boom"}))
    gone = subprocess.Popen(["true"])
    gone.wait()
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    for seed, pid in ((1, os.getpid()), (2, gone.pid)):
        (runs / f".seed{seed}.progress.json").write_text(
            json.dumps(
                {
                    "experiment": EID,
                    "seed": seed,
                    "profile": "smoke",
                    "host": socket.gethostname(),
                    "pid": pid,
                    "state": "running",
                    "epoch": 2,
                    "epochs": 4,
                    "eta_s": 30.0,
                    "eta_source": "measured",
                    "updated": now,
                    "metrics": {"train_loss": 1.5, "test_accuracy": 42.0},
                    "plan": str(plan_file(tmp_path)),
                }
            )
        )
    text = describe(collect("smoke", tmp_path / "results", EID, "0,1,2,3,4"))
    assert text.startswith("smoke: 1 running, 1 finished, 1 failed, 1 stopped, 1 to run"), text
    assert f"  {EID} seed 1: epoch 2/4, train loss 1.5, test acc 42.00 %, ETA 0:00:" in text, text
    assert (
        f"  {EID} seed 3: RuntimeError: boom" in text
        and f"  {EID} seed 2: its process (pid {gone.pid}) ended without a word after epoch 2/4" in text
    ), text
    # 3 jobs x the plan's 120 s (stopped, failed, to run) + the running job's ETA (30 s, less its age)
    assert "what remains: 0:06:" in text and "by the plan" in text and "for 4 jobs" in text, text
