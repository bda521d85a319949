"""The expensive set-ups of the cluster tests, each made once per test process and shared: the one-node SLURM
cluster (tests/slurm_cluster.py) and a PostgreSQL cluster (tests/pg_mlflow.py). Used by tests/test_slurm.py and
tests/test_tracking_server.py, which import these fixtures (`from cluster_fixtures import postgres, slurm`).

A session fixture imported into two modules is two fixtures to pytest, each run once; so what they hand out is
made once per process here (`_shared`) and torn down when the last user's session scope ends. Across processes
(pytest-xdist workers, or two pytest runs on one machine) the installs and the SLURM daemons' start are serialized
by a file lock: one apt-get and one slurmctld at a time. Two processes may use the one SLURM node at once (its
16 slots then serve both: the later jobs wait for slots, nothing waits on a test).
"""

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

LOCK = Path("/tmp/layerwise-bench-cluster-tests.lock")
_shared = {}  # name -> [value, users, stop]


@contextmanager
def machine_lock():
    """Held while this machine's packages are installed or its SLURM daemons started (other test processes wait)."""
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def shared(name: str, make):
    """`make()` -> (value, stop) once per process; `stop()` after the last user is done."""
    if name not in _shared:
        value, stop = make()
        _shared[name] = [value, 0, stop]
    entry = _shared[name]
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _shared[name]
            entry[2]()


def _start_postgres():
    import pg_mlflow

    with machine_lock():
        pg_mlflow.install()  # as root: apt-get when missing; a failure there fails the test
    pg = pg_mlflow.Postgres()
    pg.start()
    return pg, pg.stop


def _start_slurm():
    import slurm_cluster

    with machine_lock():
        up = slurm_cluster.start()  # installs when missing; 0 s when the daemons are already up
    return up, lambda: None  # the daemons stay up for the next run, as slurm_cluster.start() expects


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (pg_mlflow.Postgres, started), shared by this process's tests; skipped where
    PostgreSQL is missing and cannot be installed (not root). Stopped and removed at the end of the session."""
    import pg_mlflow

    if pg_mlflow.installed() is None and os.geteuid() != 0:  # installing it needs root; CI runs as root
        pytest.skip(
            "no PostgreSQL here (/usr/lib/postgresql/*/bin) and installing it needs root: "
            "apt-get install postgresql, or run as root"
        )
    with shared("postgres", _start_postgres) as pg:
        yield pg


@pytest.fixture(scope="session")
def slurm():
    """The one-node SLURM cluster up (installed with apt-get when missing, as root); the seconds its start took
    in this process (0 when it was already up). Left running: a later session finds it up."""
    with shared("slurm", _start_slurm) as up:
        yield up
