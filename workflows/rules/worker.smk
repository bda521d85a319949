# A warm worker for the jobs this machine runs (bench/run/worker.py): it imports torch, MLflow and the suite once
# and forks a child per `bench run|measure`, which saves ~5 s of imports per job. Jobs find it through
# $BENCH_WORKER and run in their own process when it is absent; cluster and conda runs never start one.
import os
import tempfile

WARM_WORKER = str(config.get("warm_worker", True)).lower() in ("true", "1") and workflow.local_exec and not USE_CONDA
_worker = {}


def start_worker():
    if not WARM_WORKER:
        return
    from bench.run import worker

    path = os.path.join(tempfile.gettempdir(), f"bench-worker-{os.getuid()}-{os.getpid()}.sock")
    os.makedirs(f"{RESULTS}/logs", exist_ok=True)
    try:
        _worker["proc"] = worker.start(path, parent_pid=os.getpid(), log=f"{RESULTS}/logs/worker.log")
    except RuntimeError as err:
        print(f"warm worker not started ({err}); each job imports on its own", file=sys.stderr)
        return
    os.environ[worker.ENV] = path


def stop_worker():
    proc = _worker.pop("proc", None)
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=30)
    os.environ.pop("BENCH_WORKER", None)


onstart:
    start_worker()


onsuccess:
    stop_worker()


onerror:
    stop_worker()
