"""Shared fixtures: where the papers and the shared real data are, a working directory for runs, the caches the
suite writes kept out of $HOME, and the smoke DAG's finished runs of this checkout reused where a test only needs
a finished run."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# the one-node SLURM cluster and the PostgreSQL + mlflow server the cluster tests share (tests/cluster_fixtures.py)
pytest_plugins = ["cluster_fixtures"]

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BENCH_SHARED", REPO.parent / "shared"))
PAPERS = SHARED / "papers"
SHARED_DATA = SHARED / "data"


def shared_missing(message: str):
    """A test that needs ../shared without it: skipped with the reason on a user's machine, failed where
    BENCH_REQUIRE_SHARED=1 (.ci/run sets it: CI always has ../shared, so a missing file there is a real failure)."""
    if os.environ.get("BENCH_REQUIRE_SHARED") == "1":
        pytest.fail(f"{message} (BENCH_REQUIRE_SHARED=1)")
    pytest.skip(f"{message}; set BENCH_SHARED to the shared folder")


def paper_text(source: str) -> str:
    """The text of a paper by its source prefix ('000'...'003'); skips (with the reason) when ../shared is absent."""
    files = sorted(PAPERS.glob(f"{source}_*.txt"))
    if not files:
        shared_missing(f"paper {source} not found under {PAPERS}")
    return files[0].read_text(encoding="utf-8")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty directory with its own MLflow store, so tests never touch the repository's results."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def shared_raw(dataset: str, folder, pattern: str = "*-ubyte.gz", keep_gz: bool = False, also_as_train: bool = False):
    """Gunzip ../shared/data/<dataset>/<pattern> into folder (torchvision's raw/ layout); skips, saying why, when
    the shared folder is absent. also_as_train: copy test files under train names too (splits missing there)."""
    import gzip
    import shutil

    src = SHARED_DATA / dataset
    if not src.exists():
        shared_missing(f"{src} not present (the shared real-data folder)")
    folder.mkdir(parents=True, exist_ok=True)
    for gz in sorted(src.glob(pattern)):
        if keep_gz:
            shutil.copy(gz, folder / gz.name)
        with gzip.open(gz) as fin:
            content = fin.read()
        (folder / gz.name[:-3]).write_bytes(content)
        if also_as_train:
            (folder / gz.name[:-3].replace("t10k", "train")).write_bytes(content)
    return src


# ------------------------------------------------------------------------------------------------------ caches
# Everything the suite or its libraries would cache under $HOME during the tests (bench plan's counted parts,
# Matplotlib's font cache, Snakemake's and others' XDG caches) goes to one temporary folder per test session,
# shared by pytest-xdist's workers (they inherit the controller's environment), removed at the end.
CACHE_VARS = ("BENCH_CACHE", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR")


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one test process per core, and one more. Several tests spend most of their time waiting (held
    jobs, a SLURM queue, a server's retries, a DAG of 16 jobs that another process runs), so an extra process
    keeps the cores busy meanwhile."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(config, items):
    """The tests on the shared PostgreSQL and SLURM cluster first, then the other `slow` ones, then the rest (a
    stable sort: the same order in every xdist process). pytest-xdist hands out tests in collection order. The
    first mostly wait (16 jobs held and released, a server's retry windows, the SLURM queue's polls): started first,
    their waits overlap the other tests' work instead of running alone at the end of the session. The long ones
    next, the short ones last: the short ones then fill the processes' gaps, and no long test starts when the others
    are done (longest first, the usual rule for packing jobs onto a few workers)."""
    items.sort(
        key=lambda item: (not {"postgres", "slurm"} & set(item.fixturenames), item.get_closest_marker("slow") is None)
    )


def pytest_configure(config):
    if os.environ.get("BENCH_TEST_CACHE_ROOT"):  # an xdist worker: the controller set everything up
        return
    root = Path(tempfile.mkdtemp(prefix="bench-tests-"))
    config._bench_cache_root = root
    os.environ["BENCH_TEST_CACHE_ROOT"] = str(root)
    for var in CACHE_VARS:
        os.environ[var] = str(root / var.lower())


def pytest_unconfigure(config):
    root = getattr(config, "_bench_cache_root", None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ a warm worker
_WARM: dict = {}


def warm_worker_env() -> dict:
    """{BENCH_WORKER: socket} of this test process's warm worker (bench/run/worker.py, the one the workflow starts for
    its jobs): a `python -m bench run` given it forks from a process that imported torch and MLflow once, instead of
    spending ~5 s of CPU on imports. For tests about what a job does (checkpoints, resume, its result), not about a
    fresh process's start-up; tests/test_worker.py proves a job through the worker equals one in its own process, and
    a job killed by a signal kills its client with the same signal. Started on first use, stopped at exit."""
    import atexit

    from bench.run import worker

    if "env" not in _WARM:
        root = Path(os.environ.get("BENCH_TEST_CACHE_ROOT") or tempfile.mkdtemp(prefix="bench-worker-"))
        path = root / f"worker-{os.getpid()}.sock"
        proc = worker.start(str(path), parent_pid=os.getpid(), log=str(path.with_suffix(".log")))
        atexit.register(lambda: (proc.terminate(), proc.wait(timeout=30)))
        _WARM["env"] = {worker.ENV: str(path)}
    return dict(_WARM["env"])


# ------------------------------------------------------------------------------------------------ smoke runs
class SmokeRuns:
    """Finished smoke runs for tests that only need "a finished run of experiment E": the one the smoke DAG of this
    checkout wrote (results/smoke/runs/<E>/seed<k>.json, as `.ci/run` leaves it before the tests) when it is
    valid for this checkout — `bench.run.results.load` accepts it (the experiment's resolved config today), it
    FINISHED from scratch (not resumed), and it was trained by this code version — else one trained here as the DAG
    trains it (`bench run`, its own process, one thread), once per test session, into a temporary folder with its
    own MLflow store. `source(E)` says which it was. The resume tests compare with these bit for bit."""

    def __init__(self, folder: Path, checkout_results: Path = REPO / "results"):
        self.folder, self.checkout_results, self.runs, self.sources = folder, checkout_results, {}, {}

    def checkout_result(self, experiment: str, seed: int) -> tuple[dict | None, str]:
        from bench import experiments as ex
        from bench.run import results
        from bench.run.measure import code_version

        path = results.run_path("smoke", experiment, seed, self.checkout_results)
        if not path.exists():
            return None, f"{path} absent"
        try:
            result = results.load(path, "smoke", experiment, seed, ex.config(ex.get(experiment), "smoke"))
        except results.Invalid as err:
            return None, f"{path}: {err}"
        if result["status"] != "FINISHED" or result.get("resumed_from_epoch"):  # 0: trained from scratch
            return None, f"{path}: {result['status']}, resumed from epoch {result.get('resumed_from_epoch')}"
        if result["environment"].get("code_version") != code_version():
            return None, f"{path}: code version {result['environment'].get('code_version')}, not {code_version()}"
        return result, str(path)

    def get(self, experiment: str, seed: int = 0) -> dict:
        key = (experiment, seed)
        if key not in self.runs:
            result, why = self.checkout_result(experiment, seed)
            if result is None:
                result, why = self.train(experiment, seed), f"trained here ({why})"
            self.runs[key], self.sources[key] = result, why
        return self.runs[key]

    def source(self, experiment: str, seed: int = 0) -> str:
        return self.sources[(experiment, seed)]

    def train(self, experiment: str, seed: int) -> dict:
        """As the smoke DAG trains it: `bench run`, one thread (the workflow's default), through this test process's
        warm worker as the workflow's local jobs run (tests/test_worker.py: the same run as in a process of its own),
        which spares each of these runs the imports of a fresh process."""
        import json
        import subprocess
        import sys

        from bench.run import results

        out = results.run_path("smoke", experiment, seed, self.folder / "results")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "run",
                "-e",
                experiment,
                "--profile",
                "smoke",
                "--seed",
                str(seed),
                "--threads",
                "1",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            cwd=self.folder,
            timeout=1800,
            env={
                **os.environ,
                **warm_worker_env(),
                "MLFLOW_TRACKING_URI": f"sqlite:///{self.folder / 'mlflow.db'}",
            },
        )
        assert proc.returncode == 0, f"{experiment} seed {seed}: {proc.stderr[-2000:]}"
        result = json.loads(out.read_text())
        assert result["status"] == "FINISHED", f"{experiment} seed {seed}: {result.get('error')}"
        return result


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory) -> SmokeRuns:
    return SmokeRuns(tmp_path_factory.mktemp("smoke-runs"))


# ------------------------------------------------------------------------------------------- one small DAG
# The workflow, concurrency and browsing tests read one real smoke DAG: 4 experiments x 4 seeds, 16 jobs all at once
# (--cores 16, one thread each) logging into one SQLite MLflow store. It runs once per test session: the first test
# process (pytest-xdist worker) that needs it runs it under a file lock in the session's shared folder, the others
# wait for it and read the same folder. Tests that change the folder copy it first. The folder's name holds a space,
# and the results, reports and data roots are given as paths inside it (`small_dag_config`): every path the rules
# pass to a shell is quoted, or this DAG fails (issue 31).
SMALL_DAG_EXPERIMENTS = [
    "ma-cifar10-vgg8-backprop",
    "ma-cifar10-resnet18_r4-backprop",
    "cruciata-mnist-vgg11-backprop",
    "bhyravabhottla-cifar10-cnn12-backprop",
]
SMALL_DAG_SEEDS = 4
SMALL_DAG_CONFIG = ["--config", "profile=smoke", f"seeds={SMALL_DAG_SEEDS}", f"only={','.join(SMALL_DAG_EXPERIMENTS)}"]


def small_dag_config(folder: Path) -> list[str]:
    """SMALL_DAG_CONFIG with the results, reports and data roots as absolute paths in `folder` (results/, reports/
    and "my data/": a path with a space, wherever the folder is)."""
    return [
        *SMALL_DAG_CONFIG,
        f"results={folder / 'results'}",
        f"reports={folder / 'reports'}",
        f"data_root={folder / 'my data'}",
    ]


class SmallDag:
    def __init__(self, folder: Path, returncode: int, log: str):
        self.folder, self.returncode, self.log = folder, returncode, log


@pytest.fixture(scope="session")
def small_dag(tmp_path_factory) -> SmallDag:
    import fcntl
    import json
    import subprocess
    import sys

    shared = Path(os.environ.get("BENCH_TEST_CACHE_ROOT") or tmp_path_factory.getbasetemp())
    folder, record = shared / "small dag", shared / "small-dag.json"
    with open(shared / "small-dag.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while the DAG runs; released when the file closes
        if not record.exists():
            folder.mkdir()
            # the committed reports, as in a clone: a restricted run must leave them as they are (issue 31)
            shutil.copytree(REPO / "reports", folder / "reports")
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "snakemake",
                    "-s",
                    str(REPO / "Snakefile"),
                    "--directory",
                    str(folder),
                    "--cores",
                    "16",
                    *small_dag_config(folder),
                ],
                capture_output=True,
                text=True,
                timeout=1800,
            )
            record.write_text(json.dumps({"returncode": proc.returncode, "log": proc.stdout + proc.stderr}))
    done = json.loads(record.read_text())
    assert done["returncode"] == 0, done["log"][-3000:]
    return SmallDag(folder, done["returncode"], done["log"])


# ------------------------------------------------------------------------------------------------ threads
@pytest.fixture
def one_torch_thread():
    """A test of tiny in-process models runs torch on one thread (`pytestmark = pytest.mark.usefixtures(
    "one_torch_thread")`): fastest at that size, no OpenMP oversubscription on a loaded CI machine (10x slower), and
    the same numbers as the killed runs it is compared with (`bench run --threads 1`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ signals
@pytest.fixture(autouse=True)
def default_interrupt_handling(request):
    """Every test starts with Ctrl-C and SIGTERM handled as in a fresh Python process and neither blocked: the tests
    that interrupt a `bench` or Snakemake process (tests/test_progress.py) start it from this process, and a child
    inherits an ignored or blocked signal. In two fresh-clone CI runs something earlier in a test process left
    SIGINT ignored there; a test that leaves them changed is named in a warning (by its own teardown, and
    again before the next test of its process) and undone."""
    import signal
    import threading
    import warnings

    if threading.current_thread() is not threading.main_thread():  # handlers can be set in the main thread only
        yield
        return
    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    changed = [s.name for s, h in wanted.items() if signal.getsignal(s) is not h]
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, set(wanted)) & set(wanted)
    for sig, handler in wanted.items():
        signal.signal(sig, handler)
    if changed or blocked:
        warnings.warn(
            f"a test before {request.node.nodeid} left {changed or [s.name for s in blocked]} changed", stacklevel=2
        )
    yield
    changed = [s.name for s, h in wanted.items() if signal.getsignal(s) is not h]
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set()) & set(wanted)
    if changed or blocked:  # named here, the test itself; the next test starts as above either way
        warnings.warn(f"{request.node.nodeid} left {changed or [s.name for s in blocked]} changed", stacklevel=2)
