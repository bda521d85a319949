"""A real PostgreSQL cluster and a real `mlflow server` on it, on 127.0.0.1, for the tests of the suite's MLflow
tracking on a server (docs/running.md: On a cluster).

`Postgres` makes a throwaway cluster with initdb in a fresh temporary directory: superuser `bench` with a random
password (scram-sha-256), TCP only on 127.0.0.1 at a free port (its unix socket stays in that directory), one
database `mlflow`. The newest /usr/lib/postgresql/*/bin is used; Debian's postgresql is installed with apt-get
when there is none (root). initdb and postgres refuse to run as root, so as root they run as the `postgres`
system user, which owns the directory.

`MlflowServer` runs `python -m mlflow server` on a backend store URI in its own process group (session), so
`kill()` can SIGKILL the server with all its workers at once, as a crash would; `start()` after that brings it
back on the same port. Both classes are context managers, and every `start()` returns the seconds it took.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port_free(port: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while _listening(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} is still in use after {timeout:.0f} s")
        time.sleep(0.1)  # polling the port until the stopped server has released it: no event to wait on


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def installed() -> Path | None:
    """The bin directory of the newest PostgreSQL here, or None."""
    found = sorted(PG_ROOT.glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def install() -> Path:
    """The bin directory of the newest PostgreSQL here, installed with apt-get (as root) when there is none."""
    if installed():
        return installed()
    if os.geteuid() != 0:
        raise RuntimeError(
            f"PostgreSQL is not installed (no {PG_ROOT}/*/bin) and installing it needs root "
            "(apt-get install postgresql)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for _attempt in range(3):
        proc = _run(["apt-get", "install", "-y", "--no-install-recommends", "postgresql"], env=env, timeout=900)
        if proc.returncode == 0 and installed():
            return installed()
        _run(["apt-get", "update"], env=env, timeout=600)
    raise RuntimeError(f"apt-get install postgresql failed: {proc.stderr[-2000:]}")


class Postgres:
    """A throwaway PostgreSQL cluster: `start()`, then `uri()` for the database `mlflow`, then `stop()`."""

    user = "bench"
    database = "mlflow"

    def __init__(self):
        self.port = None
        self.password = None
        self.dir = None  # the temporary directory: data/, postgres.log

    def _as_owner(self, cmd):
        """initdb and pg_ctl refuse root: as root they run as the `postgres` system user."""
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _check(self, cmd, what):
        proc = _run(self._as_owner(cmd), timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")

    def start(self, port: int = None) -> float:
        """initdb, start and create the database; the seconds it took."""
        t0 = time.monotonic()
        bin_dir = install()
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(16)
        self.dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # under /tmp: the postgres user can reach it
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        data = self.dir / "data"
        self._check(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
            ],
            "initdb",
        )
        pwfile.unlink()
        with open(data / "postgresql.conf", "a") as conf:  # the file belongs to postgres; root may append
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{data}'\n")
        self._check(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "postgres.log"), "-w", "-t", "60", "start"],
            "pg_ctl start",
        )
        proc = _run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database],
            env={**os.environ, "PGPASSWORD": self.password},
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"createdb {self.database} failed: {proc.stderr[-2000:]}")
        return time.monotonic() - t0

    def uri(self, password: str = None) -> str:
        """The SQLAlchemy URI of the database `mlflow` (with another password to test a refused login)."""
        return (
            f"postgresql://{self.user}:{self.password if password is None else password}"
            f"@127.0.0.1:{self.port}/{self.database}"
        )

    def stop(self):
        """Stop the cluster at once (pg_ctl stop -m immediate) and remove its directory."""
        if self.dir is None:
            return
        pidfile = self.dir / "data" / "postmaster.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().split()[0])
            _run(
                self._as_owner(
                    [str(installed() / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"]
                ),
                timeout=60,
            )
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)  # until init has reaped it: no <defunct> postgres for pgrep to see
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class MlflowServer:
    """`python -m mlflow server` on `backend_uri`, artifacts in workdir/artifacts, log in workdir/mlflow-server.log."""

    def __init__(self, backend_uri: str, workdir, port: int = None):
        self.backend_uri = backend_uri
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "mlflow-server.log"
        self.proc = None

    def _log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 180.0) -> float:
        """Start the server (on the same port as before) and wait for GET /health; the seconds it took."""
        t0 = time.monotonic()
        _wait_port_free(self.port)
        (self.workdir / "artifacts").mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            str(self.workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log, "a") as log:
            log.write(f"\n=== {' '.join(cmd)}\n")
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        while not self._healthy():
            if self.proc.poll() is not None:
                self._signal_group(signal.SIGKILL)
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}; log tail:\n{self._log_tail()}")
            if time.monotonic() - t0 > timeout:
                self.kill()
                raise RuntimeError(
                    f"mlflow server did not answer {self.url}/health in {timeout:.0f} s; log tail:\n{self._log_tail()}"
                )
            time.sleep(0.2)  # polling GET /health: the server offers no event to wait on
        return time.monotonic() - t0

    def _signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)  # start_new_session: the group id is the server's pid
        except ProcessLookupError:
            pass

    def kill(self):
        """SIGKILL the server and all its workers, as a crash would, and wait until the port is free."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        _wait_port_free(self.port)

    def stop(self, timeout: float = 30.0):
        """Stop the server gracefully (SIGTERM to its group); SIGKILL whatever is left after `timeout`."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()  # also any worker that outlived the server

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
