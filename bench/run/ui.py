"""`bench ui`: the MLflow UI over the suite's store, on this machine only unless a host is named.

Before `mlflow server` starts, the store is checked and opened here (track.check_uri, track.open_client): a URI no
store can be opened at, a store that does not answer or refuses, is one line (exit 2), never MLflow's traceback;
then it prints a direct link to each of the suite's experiments' runs (`links`) and replaces this process with
`mlflow server`.

Each link opens the experiment's Runs tab in the UI's "Model training" view (`workflowType=machine_learning`), with
the suite's columns (`viewStateShareKey`: the shared view track.ensure_experiment stores with the experiment: each
cell's measured value beside the paper's printed one; MLflow says "You're viewing a shared view" above it). In
MLflow 3.17 that view is a switch of the whole UI kept in the browser (localStorage `mlflow.workflowType`, GenAI
until a user flips it), which decides the page an experiment opens on before the experiment's own kind tag
(`mlflow.experimentKind`, which the suite sets too: track.EXPERIMENT_KIND) is read; the link's parameter sets it
for that page without changing the browser's saved choice.
"""

import os
import socket
import sys
from urllib.parse import quote

from bench import BenchError
from bench.run import track

TRAINING_VIEW = "workflowType=machine_learning"


def link(base: str, experiment) -> str:
    """The URL of an experiment's runs in the training-runs view, with the suite's columns (track.RUNS_VIEW_TAG)
    where the experiment has them."""
    view = f"&viewStateShareKey={track.RUNS_VIEW_KEY}" if track.RUNS_VIEW_TAG in experiment.tags else ""
    return f"{base}/#/experiments/{quote(str(experiment.experiment_id))}/runs?{TRAINING_VIEW}{view}"


def links(client, base: str, prefix: str = "layerwise-bench/") -> list[tuple[str, str]]:
    """(experiment name, link to its runs) for each live experiment of the suite in the store, by name; one from
    before the suite set its kind and runs view gets them first (track.ensure_experiment), where the store lets it."""
    from mlflow.entities import ViewType

    found = track.retry(client.search_experiments, view_type=ViewType.ACTIVE_ONLY, max_results=1000)
    out = []
    for e in (e for e in found if e.name.startswith(prefix)):
        if (
            e.tags.get(track.RUNS_VIEW_TAG) != track.runs_view()
            or e.tags.get(track.EXPERIMENT_KIND_TAG) != track.EXPERIMENT_KIND
        ):
            try:
                track.ensure_experiment(client, e.name)
                e = client.get_experiment(e.experiment_id)
            except Exception:  # a store this user may read but not write: the link without the view
                pass
        out.append((e.name, link(base, e)))
    return sorted(out)


def check_store(store: str, create: bool):
    """The store `mlflow server` is to serve, checked before anything is opened: a database URI, an SQLite file that
    exists (unless `create`) in a folder that exists; else one line (BenchError)."""
    scheme = track.uri_scheme(store)
    if scheme in ("http", "https", "databricks"):
        raise BenchError(
            f"--store {track.redact(store)}: a tracking server serves its own UI (open it in a browser); "
            f"bench ui serves a database: sqlite:///<file>, postgresql://..., mysql://..., mssql://..."
        )
    path = track.check_uri(store, track.DATABASE_SCHEMES)
    if path is not None and not create:
        raise BenchError(
            f"no MLflow store at {path.resolve()}: run the workflow (or bench run) here first, pass "
            f"--store, or --create to start an empty one"
        )


def open_store(store: str):
    """A client of the checked store, opened and read once (a new SQLite store is created and said): a store that
    does not answer or refuses is one line (BenchError)."""
    try:
        client = track.open_client(store)
        track.retry(client.search_experiments, max_results=1)
    except track.StoreURIError:
        raise
    except Exception as err:
        raise BenchError(track.describe(err, store)) from None
    return client


def serve(host: str = "127.0.0.1", port: int = 5000, store: str | None = None, create: bool = False):
    """Replace this process with `mlflow server` on host:port over `store` (default the suite's tracking URI); a
    taken port, a store that cannot be opened or a missing SQLite store (unless `create`) is an error, a host other
    than this machine a warning. Prints the link to each of the suite's experiments' runs first."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving the MLflow UI on {host}: anyone who reaches this address sees every run", file=sys.stderr
        )
    if not 1 <= port <= 65535:  # the arguments first, then the store
        raise BenchError(f"--port {port}: a TCP port is between 1 and 65535")
    store = store or track.tracking_uri()
    check_store(store, create)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise BenchError(
                f"--port {port} on {host}: {err.strerror.lower()} (another bench ui or MLflow "
                f"server?); choose another --port"
            ) from None
    client = open_store(store)
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    base = f"http://{shown}:{port}"
    found = links(client, base)
    for name, url in found:
        print(f"{name}: {url}")
    if not found:
        print("no experiments of the suite in this store yet (bench setup --profile P creates them)", file=sys.stderr)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        store,
        "--workers",
        "1",
    ]
    print(
        f"MLflow UI on {base} (store {track.redact(store)}); each experiment's runs at the links above; Ctrl-C "
        f"stops it",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)
