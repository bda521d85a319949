"""The cluster's tracking with real parts: a PostgreSQL cluster, `mlflow server` on it, 16 smoke jobs at once
logging over HTTP (through the one-node SLURM cluster of tests/slurm_cluster.py when BENCH_SLURM_TEST=1, as in CI;
else through Snakemake's local executor), and the server SIGKILLed while they train, kept down until every job has
tried to log to it and given up after all of its client's retries, then started again while they still train. No
job may fail, no run may be lost, the reports must not change, and `bench sync` must fill in exactly the metric
points the outage cost, once.

What happens when is decided by the jobs' own progress, never by the clock: they run with $BENCH_FAULT=hold:DIR
(bench/methods/training.py), which holds each job before its epochs 2, 3, ... until the test creates DIR/epoch<k>,
and says so with a file DIR/waiting-epoch<k>.<host>.<pid>. The deadlines below only stop a hung test.

PostgreSQL is Debian's (installed with apt-get when missing, as root: tests/pg_mlflow.py); it and the SLURM
cluster are started once per test process (tests/cluster_fixtures.py).
"""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO
from test_sync import runs_of
from test_workflow import SNAKEMAKE, job_counts

EXPERIMENTS = [
    "ma-cifar10-vgg8-backprop",
    "ma-cifar100-vgg8-backprop",
    "cruciata-mnist-vgg11-backprop",
    "bhyravabhottla-cifar10-cnn12-backprop",
]
SEEDS = 4  # 4 x 4 = 16 jobs at once
JOBS = len(EXPERIMENTS) * SEEDS
ON_SLURM = os.environ.get("BENCH_SLURM_TEST") == "1"
GUARD_S = 1200  # a hung test's end, nothing else: every wait below is for an event


@pytest.fixture
def server(tmp_path, postgres):
    import pg_mlflow

    with pg_mlflow.MlflowServer(postgres.uri(), tmp_path / "server") as running:
        yield running


def store_points(client, runs) -> int:
    return sum(len(client.get_metric_history(r.info.run_id, k)) for r in runs.values() for k in r.data.metrics)


def most_at_once(runs) -> int:
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    at_once = best = 0
    for _, step in events:
        at_once += step
        best = max(best, at_once)
    return best


def workflow(tmp_path, env, log, dry_run=False) -> subprocess.Popen:
    """The smoke workflow of EXPERIMENTS x SEEDS, its output into the file `log` (a pipe nobody reads while the
    jobs are held could fill and stop Snakemake)."""
    config = ["profile=smoke", f"seeds={SEEDS}", f"only={','.join(EXPERIMENTS)}"] + (
        ["device=cpu", "mem_mb=400"] if ON_SLURM else []
    )
    args = [*SNAKEMAKE, "--directory", str(tmp_path), "--config", *config]
    if ON_SLURM:
        args += [
            "--workflow-profile",
            str(REPO / "workflows/profiles/slurm"),
            "--default-resources",
            "slurm_partition=debug",
            "runtime=20",
            "mem_mb=400",
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
        ]
    else:
        args += ["--cores", str(JOBS)]
    with open(log, "w") as out:
        return subprocess.Popen(
            args + (["--dry-run"] if dry_run else []), stdout=out, stderr=subprocess.STDOUT, text=True, env=env
        )


def waiting(holds, epoch: int) -> int:
    """How many jobs are held before `epoch` (their epoch - 1 trained, logged or not, and checkpointed)."""
    return len(list(holds.glob(f"waiting-epoch{epoch}.*")))


def release(holds, epoch: int):
    holds.mkdir(parents=True, exist_ok=True)
    (holds / f"epoch{epoch}").touch()


def wait_for(seen, proc, log, what: str):
    """Poll until `seen()` while the workflow runs; GUARD_S only ends a hung test, it orders nothing."""
    deadline = time.monotonic() + GUARD_S
    while not seen():
        assert proc.poll() is None, f"the workflow ended ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {GUARD_S} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)  # polling for the event itself, not a wait that stands for it


@pytest.mark.slow
def test_sixteen_jobs_on_a_postgres_backed_server_survive_its_outage(tmp_path, postgres, server, monkeypatch, request):
    from mlflow.tracking import MlflowClient

    from bench import experiments as ex
    from bench.claims.registry import load_claims
    from bench.methods.training import FAULT_ENV
    from bench.run import track
    from bench.run.results import run_path
    from bench.run.sync import epoch_points, expected_tags, final_points, sync

    if ON_SLURM:
        request.getfixturevalue("slurm")  # the cluster up (started once per test process)
    epochs = max(ex.config(ex.get(e), "smoke")["epochs"] for e in EXPERIMENTS)
    # held before epochs 2 and 3, with epochs left to train once the server is back
    assert min(ex.config(ex.get(e), "smoke")["epochs"] for e in EXPERIMENTS) >= 3
    t0 = time.monotonic()
    holds, log = tmp_path / "holds", tmp_path / "workflow.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, FAULT_ENV: f"hold:{holds}"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this test's own calls: no waiting on a dead server
    client = MlflowClient(server.url)
    proc = workflow(tmp_path, env, log)
    try:
        # every job's run open with epoch 1 logged, and the job held before epoch 2: all 16 train at once
        wait_for(lambda: waiting(holds, 2) >= JOBS, proc, log, f"{JOBS} jobs held before epoch 2")
        runs = runs_of(client)
        assert len(runs) == JOBS and all(r.info.status == "RUNNING" for r in runs.values())
        assert all(
            [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")] == [1] for r in runs.values()
        )
        # the server dies while they are mid-training; then they train epoch 2 and log it to the dead server
        killed = time.monotonic()
        server.kill()
        release(holds, 2)
        # A job's log call gives up only after all of its client's retries (track.HTTP_RETRIES, about
        # track.RETRY_WINDOW_S); then it trains on, checkpoints and is held before epoch 3. So once all 16 are held
        # there, the server has been down for longer than every job's retry window: an event, not a duration.
        wait_for(lambda: waiting(holds, 3) >= JOBS, proc, log, f"{JOBS} jobs held before epoch 3")
        server.start()  # back while they still train
        down = time.monotonic() - killed
        for k in range(3, epochs + 1):
            release(holds, k)
        proc.wait(timeout=GUARD_S)
    finally:
        for k in range(2, epochs + 1):  # a failed test leaves no job held (SLURM would keep it until its runtime)
            release(holds, k)
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    assert waiting(holds, 2) == waiting(holds, 3) == JOBS  # one process per job, each held twice
    if ON_SLURM:
        assert sum("has been submitted with SLURM jobid" in line for line in out.splitlines()) == JOBS
    else:
        assert job_counts(out)["train"] == JOBS
    took = time.monotonic() - t0

    # no job failed; every result file complete; every job tried to log while the server was down and lost points
    results = {}
    for experiment in EXPERIMENTS:
        for seed in range(SEEDS):
            r = json.loads(run_path("smoke", experiment, seed, tmp_path / "results").read_text())
            assert r["status"] == "FINISHED" and len(r["epochs"]) == r["config"]["epochs"], (experiment, seed)
            assert postgres.password not in json.dumps(r)
            assert r["mlflow"]["unlogged_points"] > 0, ("the outage cost this job nothing", experiment, seed)
            assert server.url in r["mlflow"]["error"], r["mlflow"]["error"]  # said once, in the result file too
            results[(experiment, seed)] = r
    assert all(r["mlflow"]["run_id"] for r in results.values())  # every run was opened before the outage

    reports = {p: p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    assert tmp_path / "reports/smoke/index.md" in reports
    runs = runs_of(client)
    assert sorted(runs) == sorted(results)  # each run exactly once, none lost
    before = store_points(client, runs)
    claims = {c.id: c for c in load_claims()}  # every run's points: its epochs, its finals and its cells' values
    expected = sum(
        len(epoch_points(r)) + len(final_points(r, track.cell_keys(expected_tags(r, claims)))) for r in results.values()
    )
    monkeypatch.chdir(tmp_path)
    counts = sync("smoke", tmp_path / "results")
    runs = runs_of(client)
    after = store_points(client, runs)
    assert counts["created"] == 0 and counts["points"] == expected - before > 0 and after == expected
    assert sync("smoke", tmp_path / "results")["points"] == 0  # a second sync adds nothing

    for key, run in runs.items():
        r = results[key]
        assert run.info.status == "FINISHED" and run.info.run_id == r["mlflow"]["run_id"]
        assert run.data.params["epochs"] == str(r["config"]["epochs"]) and len(run.data.params) > 10
        assert run.data.tags["profile"] == "smoke" and run.data.tags["data_sha256"] == r["data"]["sha256"]
        assert run.data.metrics["final_test_accuracy"] == r["metrics"]["test_accuracy"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert sorted(steps) == [e["epoch"] for e in r["epochs"]]  # one point per epoch
        assert [i.dataset.name for i in run.inputs.dataset_inputs] == [
            f"{key[0].split('-')[1]}/train",
            f"{key[0].split('-')[1]}/test",
        ]
    at_once = most_at_once(runs.values())
    assert at_once == JOBS

    # the reports: unchanged, and the workflow has nothing left to do after the sync
    again = workflow(tmp_path, {**os.environ, "MLFLOW_TRACKING_URI": server.url}, tmp_path / "again.log", dry_run=True)
    again.wait(timeout=600)
    again_out = (tmp_path / "again.log").read_text()
    assert again.returncode == 0 and "Nothing to be done" in again_out, again_out[-3000:]
    assert {p: p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()} == reports
    print(
        f"{'SLURM' if ON_SLURM else 'local'}: {JOBS} jobs, {at_once} at once; {len(runs)} runs present, 0 lost; "
        f"server down {down:.0f} s; sync filled {counts['points']} points ({before} of {expected} logged live); "
        f"{took:.0f} s"
    )


@pytest.mark.slow
def test_a_wrong_database_password_costs_one_line_never_the_run(tmp_path, postgres):
    uri = postgres.uri(password="not-the-password")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "-e",
            "karimi-cifar10-lenet-backprop-adam",
            "--profile",
            "smoke",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if "mlflow" in line.lower()]
    assert len(said) == 1 and "refused the credentials" in said[0] and "postgresql://***@127.0.0.1" in said[0], (
        proc.stderr
    )
    assert "not-the-password" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    result = (tmp_path / "results/smoke/runs/karimi-cifar10-lenet-backprop-adam/seed0.json").read_text()
    assert json.loads(result)["status"] == "FINISHED" and "not-the-password" not in result
