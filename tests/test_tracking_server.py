"""The cluster's tracking with real parts: a PostgreSQL cluster, `mlflow server` on it, 16 smoke jobs at once
logging over HTTP (through the one-node SLURM cluster of tests/slurm_cluster.py when BENCH_SLURM_TEST=1, as in CI;
else through Snakemake's local executor), and the server SIGKILLed while they train, kept down for longer than
the client's retries, then started again. No job may fail, no run may be lost, the reports must not change, and
`bench sync` must fill in exactly the metric points the outage cost, once.

PostgreSQL is Debian's (installed with apt-get when missing, as root: tests/pg_mlflow.py).
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

EXPERIMENTS = ["ma-cifar10-vgg8-backprop", "ma-cifar100-vgg8-backprop", "cruciata-mnist-vgg11-backprop",
               "bhyravabhottla-cifar10-cnn12-backprop"]
SEEDS = 4  # 4 x 4 = 16 jobs at once
SLOW_MS = 2500  # each batch sleeps 2.5 s (BENCH_FAULT=slow): jobs that train for minutes without the CPU for it
ON_SLURM = os.environ.get("BENCH_SLURM_TEST") == "1"


@pytest.fixture(scope="module")
def postgres():
    import pg_mlflow

    if pg_mlflow.installed() is None and os.geteuid() != 0:  # installing it needs root; CI runs as root
        pytest.skip("no PostgreSQL here (/usr/lib/postgresql/*/bin) and installing it needs root: "
                    "apt-get install postgresql, or run as root")
    pg_mlflow.install()  # as root: apt-get when missing; a failure there fails the test
    with pg_mlflow.Postgres() as pg:  # started; stopped and removed at the end
        yield pg


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


def workflow(tmp_path, env, dry_run=False) -> subprocess.Popen:
    config = ["profile=smoke", f"seeds={SEEDS}", f"only={','.join(EXPERIMENTS)}"] + \
        (["device=cpu", "mem_mb=400"] if ON_SLURM else [])
    args = [*SNAKEMAKE, "--directory", str(tmp_path), "--config", *config]
    if ON_SLURM:
        args += ["--workflow-profile", str(REPO / "workflows/profiles/slurm"),
                 "--default-resources", "slurm_partition=debug", "runtime=20", "mem_mb=400", "cpus_per_task=1",
                 "--set-resources", "train:gpu=0", "--slurm-no-account", "--slurm-status-command", "squeue",
                 "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3",
                 "--latency-wait", "5"]
    else:
        args += ["--cores", "16"]
    return subprocess.Popen(args + (["--dry-run"] if dry_run else []), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_sixteen_jobs_on_a_postgres_backed_server_survive_its_outage(tmp_path, postgres, server, monkeypatch):
    from mlflow.tracking import MlflowClient

    from bench.run import track
    from bench.run.results import run_path
    from bench.run.sync import epoch_points, final_points, sync

    if ON_SLURM:
        import slurm_cluster

        slurm_cluster.start()
    t0 = time.monotonic()
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "BENCH_FAULT": f"slow:{SLOW_MS}"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this test's own polling: no waiting on a dead server
    client = MlflowClient(server.url)
    proc = workflow(tmp_path, env)
    try:
        # every job's run open and logging: all 16 train at once; then the server dies
        deadline = time.monotonic() + 900
        while True:
            assert proc.poll() is None, f"the workflow ended before the outage:\n{proc.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, "the 16 runs never all logged an epoch"
            runs = runs_of(client)
            if len(runs) == 16 and all("train_loss" in r.data.metrics for r in runs.values()):
                break
            time.sleep(1)
        running = sum(r.info.status == "RUNNING" for r in runs.values())
        killed = time.monotonic()
        server.kill()
        time.sleep(track.RETRY_WINDOW_S + 10)  # down for longer than a job's client retries one call
        server.start()
        down = time.monotonic() - killed
        log, _ = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-4000:]
    if ON_SLURM:
        assert sum("has been submitted with SLURM jobid" in line for line in log.splitlines()) == 16
    else:
        assert job_counts(log)["train"] == 16
    took = time.monotonic() - t0

    # no job failed; every result file complete
    results = {}
    for experiment in EXPERIMENTS:
        for seed in range(SEEDS):
            r = json.loads(run_path("smoke", experiment, seed, tmp_path / "results").read_text())
            assert r["status"] == "FINISHED" and len(r["epochs"]) == r["config"]["epochs"], (experiment, seed)
            assert postgres.password not in json.dumps(r)
            results[(experiment, seed)] = r
    assert sum(r["mlflow"]["unlogged_points"] for r in results.values()) > 0, "the outage cost no job anything"
    assert all(r["mlflow"]["run_id"] for r in results.values())  # every run was opened before the outage

    reports = {p: p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    runs = runs_of(client)
    assert sorted(runs) == sorted(results)  # each run exactly once, none lost
    before = store_points(client, runs)
    expected = sum(len(epoch_points(r)) + len(final_points(r)) for r in results.values())
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
        assert [i.dataset.name for i in run.inputs.dataset_inputs] == [f"{key[0].split('-')[1]}/train",
                                                                        f"{key[0].split('-')[1]}/test"]
    at_once = most_at_once(runs.values())
    assert at_once == 16

    # the reports: unchanged, and the workflow has nothing left to do after the sync
    again = workflow(tmp_path, {**os.environ, "MLFLOW_TRACKING_URI": server.url}, dry_run=True)
    again.out = again.communicate(timeout=600)[0]
    assert again.returncode == 0 and "Nothing to be done" in again.out, again.out[-3000:]
    assert {p: p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()} == reports
    print(f"{'SLURM' if ON_SLURM else 'local'}: 16 jobs, {at_once} at once ({running} RUNNING when the server was "
          f"killed); {len(runs)} runs present, 0 lost; server down {down:.0f} s; sync filled {counts['points']} "
          f"points ({before} of {expected} logged live); {took:.0f} s")


@pytest.mark.slow
def test_a_wrong_database_password_costs_one_line_never_the_run(tmp_path, postgres):
    uri = postgres.uri(password="not-the-password")
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "-e", "karimi-cifar10-lenet-backprop-adam",
                           "--profile", "smoke", "--threads", "1"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if "mlflow" in line.lower()]
    assert len(said) == 1 and "refused the credentials" in said[0] and "postgresql://***@127.0.0.1" in said[0], \
        proc.stderr
    assert "not-the-password" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    result = (tmp_path / "results/smoke/runs/karimi-cifar10-lenet-backprop-adam/seed0.json").read_text()
    assert json.loads(result)["status"] == "FINISHED" and "not-the-password" not in result
