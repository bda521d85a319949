"""`bench ui`: the MLflow UI over the suite's store, on this machine only unless a host is named."""
import os
import socket
import sys
from pathlib import Path

from bench import BenchError
from bench.run import track


def serve(host: str = "127.0.0.1", port: int = 5000, store: str | None = None, create: bool = False):
    """Replace this process with `mlflow server` on host:port over `store` (default the suite's tracking URI); a
    taken port or a missing SQLite store (unless `create`) is an error, a host other than this machine a warning."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving the MLflow UI on {host}: anyone who reaches this address sees every run",
              file=sys.stderr)
    store = store or track.tracking_uri()
    if not 1 <= port <= 65535:
        raise BenchError(f"--port {port}: a TCP port is between 1 and 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise BenchError(f"--port {port} on {host}: {err.strerror.lower()} (another bench ui or MLflow "
                             f"server?); choose another --port") from None
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).exists() and not create:
        raise BenchError(f"no MLflow store at {store[len('sqlite:///'):]}: run the workflow (or bench run) here first, "
                         f"pass --store, or --create to start an empty one")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--backend-store-uri", store,
           "--workers", "1"]
    print(f"MLflow UI on http://{host}:{port} (store {track.redact(store)}); Ctrl-C stops it", file=sys.stderr)
    os.execvp(cmd[0], cmd)
