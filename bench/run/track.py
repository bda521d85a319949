"""The MLflow side channel: one MLflow run per (experiment, seed), for browsing.

The result files stay the source of truth; MLflow is never allowed to fail a training job. The store is
$MLFLOW_TRACKING_URI (a SQL database, or an `mlflow server` over HTTP), else a SQLite file `mlflow.db` in the
working directory (absolute URI). `setup()` creates the store and every experiment once, before the jobs fan out,
so that parallel jobs never race to create them; every call retries while SQLite reports a locked database.

When the store is away (a tracking server restarting, a wrong URI or password), a job says so in one line on
stderr, with the URI's credentials removed, and trains on: each MLflow call gives up after the client's bounded
HTTP retries (`HTTP_RETRIES`, about `RETRY_WINDOW_S` seconds), then live logging pauses (`PAUSE_S`, doubling while
the store stays away) instead of stalling every epoch. What the store missed is in the result file: every epoch
record carries the timestamp its metrics were logged with, and `bench sync` (bench/run/sync.py) logs whatever a run
lacks, with those timestamps, once the store is back.

What the MLflow UI shows (issue 31): every experiment carries the tag `mlflow.experimentKind` =
"custom_model_development" (the UI's "Machine learning" kind, whose experiment page opens on its runs, not on
GenAI traces; MLflow 3.17 reads a per-browser GenAI/"Model training" switch before it, which the links `bench ui`
prints set: bench/run/ui.py) and the suite's view of its runs list (RUNS_VIEW_TAG); a run's name is short and
readable in the runs list (`run_name`: method, model, dataset, seed; the paper is the MLflow experiment's, the full
experiment id the tag `experiment`); each run carries, per kind of cell it is measured for, the value the cell
reads as a metric (`cell_<metric>_<unit>`, in the cell's unit: test accuracy or error in %, training time as its
paper times it, memory) beside the paper's printed value(s) as a tag (`claimed_<metric>_<unit>`, the registry's
strings), so the runs list sorts and compares them.

A tracking URI is checked before MLflow sees it (`check_uri`): no scheme MLflow tracks to, or an SQLite file in a
folder that does not exist, is a `StoreURIError` (one line); a new SQLite store is created only in an existing
folder, and said (one line on stderr).
"""

import json
import logging
import os
import random
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import BenchError

MAX_PARAMS_PER_BATCH = 100
# MLflow's HTTP client retries a failed call 7 times with a backoff factor of 2 (minutes per call) unless told
# otherwise; these bound one call to about RETRY_WINDOW_S seconds (0 + 2 + 4 s of backoff plus up to 1 s of jitter
# each; refused connections fail at once). A user's own setting of any of them wins.
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
RETRY_WINDOW_S = 10.0
SQL_ENGINE_RETRIES = 5  # MLflow's retries of a SQL store's connection (0.1 x (2^k - 1) s each); SQLite keeps its 10
PAUSE_S = (30.0, 600.0)  # after a failed call, live logging pauses 30 s, doubling up to 10 min while it keeps failing
_CREDENTIALS = re.compile(r"([a-zA-Z][\w+.-]*://)[^/@\s'\"]+@")
# The experiment tag MLflow 3's UI reads for an experiment's kind, and the kind of a training benchmark: "Machine
# learning" (mlflow/server/js: GENAI_DEVELOPMENT="genai_development", CUSTOM_MODEL_DEVELOPMENT=
# "custom_model_development"; a run-based experiment page opens on its Runs tab). Kinds the UI only guessed
# (`*_inferred`, "no_inferred_type") or none are replaced; one a user chose in the UI is kept.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_GUESSED_KINDS = ("", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred")
# A view of an experiment's runs list that shows, beside each run's name, the cells' values and the paper's printed
# values (CELL_KEYS), newest first: MLflow 3's shared view state (the runs page's "Share": an experiment tag
# mlflow.sharedViewState.<key> holding the page's search facets and UI state as JSON, opened by the link parameter
# viewStateShareKey=<key>, which `bench ui` prints). Without it the runs list shows no metric column at all.
RUNS_VIEW_KEY = "layerwise-bench"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
# URI schemes MLflow tracks to (a database through SQLAlchemy, optionally +driver, or a tracking server)
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
TRACKING_SCHEMES = DATABASE_SCHEMES + ("http", "https", "databricks", "file")
# (claim metric, unit) -> the key of its cell metric (cell_<key>) and claimed-value tag (claimed_<key>)
CELL_KEYS = {
    ("test_accuracy", "%"): "test_accuracy_pct",
    ("test_error", "%"): "test_error_pct",
    ("train_time", "min"): "train_time_min",
    ("train_time", "s"): "train_time_s",
    ("memory", "MB"): "memory_mb",
    ("memory", "GB"): "memory_gb",
    ("time_saving_pct", "%"): "time_saving_pct",
}
SECONDS_PER = {"min": 60.0, "s": 1.0}


def runs_view() -> str:
    """The JSON of RUNS_VIEW_TAG: the run's name wide enough to read, then each kind of cell's measured value (a
    metric) beside its printed value (a tag), newest runs first. Column ids are the UI's (<kind>.<name in backquotes>);
    widths apply to the columns `columnOrder` names."""
    columns = [
        f"{kind}.`{prefix}_{key}`"
        for key in CELL_KEYS.values()
        for kind, prefix in (("metrics", "cell"), ("tags", "claimed"))
    ]
    name = "attributes.`Run Name`"
    return json.dumps(
        {
            "orderByKey": "attributes.start_time",
            "orderByAsc": False,
            "selectedColumns": columns,
            "columnOrder": [name, *columns],
            "columnWidths": {name: 320, **{c: 175 for c in columns}},
        }
    )


class StoreURIError(BenchError):
    """A tracking URI that no store can be opened at (not a URI MLflow tracks to, an SQLite file in a missing
    folder): a user's error, said in one line, never retried."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def uri_scheme(uri: str) -> str:
    """'postgresql+psycopg2://...' -> 'postgresql'; '' for a URI without a scheme (a bare path)."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def sqlite_path(uri: str) -> Path | None:
    """The file of an SQLite URI (sqlite:///relative.db, sqlite:////absolute.db), None for another URI or an
    in-memory database."""
    if uri_scheme(uri) != "sqlite":
        return None
    path = uri.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path  # sqlite:///x: the third slash ends the (empty) host
    return None if path in ("", ":memory:") else Path(path)


def check_uri(uri: str, schemes: tuple = TRACKING_SCHEMES) -> Path | None:
    """Raise StoreURIError when no store can be opened at `uri`: a scheme not in `schemes` (a typo, a bare path:
    MLflow would take it for its retired file store), or an SQLite file whose folder does not exist (MLflow would
    create the folders). Returns the SQLite file that opening the store will create, else None."""
    scheme = uri_scheme(uri)
    if scheme not in schemes:
        kinds = ", ".join("sqlite:///<file>" if s == "sqlite" else f"{s}://..." for s in schemes if s != "file")
        raise StoreURIError(
            f"MLflow tracking URI {redact(uri)!r}: "
            f"{f'unknown scheme {scheme}://' if scheme else 'not a URI'}; give {kinds}"
        )
    path = sqlite_path(uri)
    if path is None or path.exists():
        return None
    if not path.parent.is_dir():
        raise StoreURIError(
            f"MLflow tracking URI {uri}: no folder {path.parent.resolve()} to hold the SQLite store "
            f"(make it first, or give another URI)"
        )
    return path


def redact_text(text: str) -> str:
    """Every URI's credentials in a message replaced by ***."""
    return _CREDENTIALS.sub(r"\1***@", text)


def redact(uri: str) -> str:
    """The URI without its credentials (postgresql://user:secret@host/db -> postgresql://***@host/db): what result
    files, logs and reports may show. Credentials never leave the environment."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def experiment_name(profile: str, paper: str) -> str:
    return f"layerwise-bench/{profile}/{paper}"


def open_client(uri: str | None = None):
    """A client of the store at `uri` (default the suite's tracking URI), checked first (check_uri); a new SQLite
    store is created at once and said in one line on stderr."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for key, value in HTTP_RETRIES.items():
        os.environ.setdefault(key, value)
    # their per-retry warnings (several lines each): describe()'s one line instead
    for name in ("urllib3", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    new = check_uri(uri)
    if not uri.startswith("sqlite:"):  # a SQL server that refuses: MLflow's 10 engine retries take 100 s, 5 take 3 s
        from mlflow.store.db import utils as db_utils

        db_utils.MAX_RETRY_COUNT = min(getattr(db_utils, "MAX_RETRY_COUNT", SQL_ENGINE_RETRIES), SQL_ENGINE_RETRIES)
    client = MlflowClient(uri)
    if new is not None:
        retry(client.search_experiments, max_results=1)  # creates the file and its tables now
        if new.exists():
            print(f"created the MLflow store {new.resolve()} (SQLite)", file=sys.stderr, flush=True)
    return client


def retry(fn, *args, attempts: int = 8, **kwargs):
    """fn(...), again while SQLite reports a locked database or two jobs race to insert the same row (a dataset
    both log); MLflow wraps these in several exception types."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            text = str(err).lower()
            if not any(w in text for w in ("locked", "unique constraint", "duplicate key")) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt * (0.5 + random.random()))


def describe(err: BaseException, uri: str | None = None) -> str:
    """One line saying why the store cannot be used, credentials removed: unreachable, refused credentials, not an
    MLflow server, or else the first line of MLflow's own message."""
    text = redact_text(str(err))
    low = text.lower()
    http = re.search(r"endpoint (\S+) failed with error code (\d{3})", text)
    if isinstance(err, StoreURIError):
        return text
    if "authentication failed" in low:
        user = re.search(r'for user "([^"]+)"', text)
        why = "the database refused the credentials (password authentication failed" + (
            f" for user {user.group(1)})" if user else ")"
        )
    elif http and http.group(2) in ("401", "403"):
        why = f"the server refused the credentials (HTTP {http.group(2)} for {http.group(1)})"
    elif http and ("<html" in low or "<!doctype" in low or http.group(2) in ("404", "405", "501")):
        why = f"not an MLflow tracking server (HTTP {http.group(2)} for {http.group(1)})"
    elif "connection refused" in low:
        why = "unreachable (connection refused)"
    elif any(
        w in low
        for w in (
            "name or service not known",
            "could not translate host name",
            "nodename nor servname",
            "temporary failure in name resolution",
            "failed to resolve",
        )
    ):
        why = "unreachable (unknown host)"
    elif "timed out" in low or "timeout" in low:
        why = "unreachable (timed out)"
    else:
        first = text.strip().splitlines()[0][:300] if text.strip() else "(no message)"
        why = f"{type(err).__name__}: {first}"
    return f"MLflow tracking at {redact(uri or tracking_uri())}: {why}"


def ensure_experiment(client, name: str) -> str:
    """The id of experiment `name`, created with the training-runs kind (EXPERIMENT_KIND) and the runs view
    (RUNS_VIEW_TAG) where missing; an existing one without a kind (or with one the UI only guessed) gets it, and
    the view as this version makes it."""
    found = retry(client.get_experiment_by_name, name)
    if found is None:
        try:
            return retry(
                client.create_experiment, name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, RUNS_VIEW_TAG: runs_view()}
            )
        except Exception:
            found = retry(client.get_experiment_by_name, name)  # created by someone else meanwhile
            if found is None:
                raise
    if found.tags.get(EXPERIMENT_KIND_TAG, "") in _GUESSED_KINDS:
        retry(client.set_experiment_tag, found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if found.tags.get(RUNS_VIEW_TAG) != runs_view():  # the suite's own view: kept as this version makes it
        retry(client.set_experiment_tag, found.experiment_id, RUNS_VIEW_TAG, runs_view())
    return found.experiment_id


def setup(profile: str, papers: list[str]) -> dict:
    """Create the store and one MLflow experiment per paper for this profile; returns name -> id."""
    client = open_client()
    return {p: ensure_experiment(client, experiment_name(profile, p)) for p in papers}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def run_name(tags: dict) -> str:
    """A run's name in the runs list, short enough to read there: method[-variant], model, dataset and seed
    ('si_forward lenet fashion_mnist seed0'). The paper is the MLflow experiment's name; the full experiment id is
    the tag `experiment`."""
    method = tags["method"] + (f"-{tags['variant']}" if tags.get("variant") else "")
    return f"{method} {tags['model']} {tags['dataset']} seed{tags['seed']}"


def legacy_run_name(experiment: str, seed) -> str:
    """The name runs had before `run_name` (the whole experiment id): `bench sync` renames them."""
    return f"{experiment}/seed{seed}"


def claimed_tags(exp, cells: list) -> dict:
    """claimed_<key> -> the printed value(s) (the registry's strings, ' | ' between different ones) of the cells
    measured on this run itself, per kind of cell (CELL_KEYS); a run that is only another cell's baseline claims
    nothing of its own."""
    own = (exp.paper, exp.dataset, exp.model, exp.method, exp.variant)
    out: dict[str, list] = {}
    for c in cells:
        key = CELL_KEYS.get((c.metric, c.unit))
        if key and c.experiment_key() == own and c.printed not in out.setdefault(f"claimed_{key}", []):
            out[f"claimed_{key}"].append(c.printed)
    return {k: " | ".join(v) for k, v in out.items()}


def training_seconds(metrics: dict, config: dict, epochs: list | None) -> float | None:
    """The run's training time as its paper times it (bench.verdicts.aggregate.training_seconds, which the tests
    hold this to): train_time_s, or under `timing: fit_with_validation` the staged wall time, else the epochs with
    their evaluations (None when those epochs are not at hand)."""
    if config.get("timing") != "fit_with_validation":
        return metrics.get("train_time_s")
    if "staged_wall_time_s" in metrics:
        return metrics["staged_wall_time_s"]
    if epochs is None:
        return None
    return sum(e.get("epoch_time_s", 0.0) + e.get("eval_time_s", 0.0) for e in epochs)


def cell_metrics(keys, metrics: dict, config: dict, epochs: list | None = None) -> dict:
    """cell_<key> -> the value a cell of that kind reads from this run, in its unit (bench.verdicts.aggregate.
    metric_value for one run); `keys` are CELL_KEYS values. A value the run lacks (a failed run, a time saving:
    it needs the baseline run) is left out."""
    out = {}
    for (metric, unit), key in CELL_KEYS.items():
        if key not in keys:
            continue
        value = None
        if metric in ("test_accuracy", "test_error") and isinstance(metrics.get("test_accuracy"), (int, float)):
            value = metrics["test_accuracy"] if metric == "test_accuracy" else 100.0 - metrics["test_accuracy"]
        elif metric == "train_time":
            seconds = training_seconds(metrics, config, epochs)
            value = None if seconds is None else seconds / SECONDS_PER[unit]
        elif metric == "memory":
            mb = metrics.get(config.get("memory_metric", "peak_memory_mb"))
            value = None if mb is None else mb / (1024.0 if unit == "GB" else 1.0)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"cell_{key}"] = value
    return out


def cell_keys(tags: dict) -> set:
    """The cell metric keys a run's tags claim (claimed_<key>)."""
    return {k[len("claimed_") :] for k in tags if k.startswith("claimed_")}


def run_tags(exp, seed: int, profile: str, cells: list, environment: dict, data: dict) -> dict:
    """The tags of an experiment's run: what it reproduces (paper, tables, cells, the cells' printed values), what
    ran (experiment, seed, profile, code, device, fast-step switches) and on what data; the same for a live job and
    for `bench sync`."""
    env = environment
    return {
        **claimed_tags(exp, cells),
        "paper": exp.paper,
        "tables": ",".join(sorted({c.table for c in cells})),
        "cells": ",".join(c.id for c in cells),
        "experiment": exp.id,
        "seed": seed,
        "profile": profile,
        "code_version": env.get("code_version", ""),
        "dataset": exp.dataset,
        "model": exp.model,
        "method": exp.method,
        "variant": exp.variant,
        "device": env.get("device", ""),
        "precision": env.get("precision", ""),
        "channels_last": env.get("channels_last", ""),
        "compile": env.get("compile", ""),
        "compile_step": env.get("compile_step", ""),
        "cuda_graphs": env.get("cuda_graphs", ""),
        # resolved per run (bench.cost.resources.recompute_rule): the config's `auto` depends on the GPU's free memory
        "activation_checkpointing": env.get("activation_checkpointing", ""),
        "activation_checkpointing_why": env.get("activation_checkpointing_why", ""),
        # PredSim's freed gradients and host-resident optimizer states (bench.methods.offload.offload_rule), resolved
        # per run like activation_checkpointing; the units offloaded are in the result file's environment
        "optimizer_offload": env.get("optimizer_offload", ""),
        "optimizer_offload_why": env.get("optimizer_offload_why", ""),
        "data_train_samples": data.get("train_samples", ""),
        "data_test_samples": data.get("test_samples", ""),
        "data_sha256": data.get("sha256", ""),
    }


def dataset_inputs(data: dict) -> list:
    """The run's data as MLflow dataset inputs (the runs page's Dataset column): the training and the test split,
    each named <dataset>/<split> (context "training" or "evaluation"), with the SHA-256 of the splits' bytes as
    trained (its first 32 hex digits as MLflow's digest, all 64 in the profile) and the sample count."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    name, sha = data.get("dataset", "?"), str(data.get("sha256", ""))
    out = []
    for split, context in (("train", "training"), ("test", "evaluation")):
        dataset = Dataset(
            name=f"{name}/{split}",
            digest=sha[:32],
            source_type="layerwise-bench",
            source=json.dumps({"uri": f"{data.get('source', '?')}:{name}/{split}"}),
            profile=json.dumps({"num_rows": data.get(f"{split}_samples"), "sha256": sha}),
        )
        out.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return out


def metric_items(metrics: dict, step: int, timestamp_ms: int) -> list:
    from mlflow.entities import Metric

    return [
        Metric(k, float(v), timestamp_ms, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def param_items(params: dict) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]


def log_params(client, run_id: str, params: list):
    for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
        retry(client.log_batch, run_id, params=params[i : i + MAX_PARAMS_PER_BATCH])


def now_ms() -> int:
    return int(time.time() * 1000)


class RunLogger:
    """One MLflow run, logged live. Never raises: a failing store is said once on stderr, kept in `error`, and live
    logging pauses (PAUSE_S) while training goes on; `unlogged` counts the metric points the store did not get,
    which `bench sync` fills in from the result file. A run that could not be created at the start is created at
    the next attempt (with the job's start time), so an outage costs points, never the run."""

    def __init__(
        self,
        profile: str,
        paper: str,
        name: str,
        tags: dict,
        params: dict,
        resume_run_id: str | None = None,
        datasets: list | None = None,
    ):
        """A new run, or, for a job resumed from its checkpoint, the run it started (`resume_run_id`), which then
        goes on receiving the epochs' metrics (one MLflow run per result file, however often the job was killed).
        A `name` in the old form (legacy_run_name) is given run_name()'s short form from the tags."""
        self.run_id, self.error, self.client, self.experiment_id = None, None, None, None
        self.experiment, self.profile = experiment_name(profile, paper), profile
        self.unlogged, self._failures, self._paused_until = 0, 0, 0.0
        if {"experiment", "seed", "method", "model", "dataset"} <= set(tags) and name == legacy_run_name(
            tags["experiment"], tags["seed"]
        ):
            name = run_name(tags)
        self._new = {
            "run_name": name,
            "tags": {k: str(v) for k, v in tags.items()},
            "params": params,
            "datasets": datasets or [],
            "start_time": now_ms(),
        }
        self._epoch_times: dict[int, dict] = {}  # step -> epoch_time_s / eval_time_s, for the cells' training time
        self._resumed = False
        self.final_time_ms = None  # when the final metrics were logged, for bench sync
        self._attempt(self._open, resume_run_id)

    def _attempt(self, fn, *args, force: bool = False) -> bool:
        """fn(*args) unless logging is paused after a failure (`force` tries anyway); True when it ran and worked."""
        if not force and time.monotonic() < self._paused_until:
            return False
        try:
            fn(*args)
        except Exception as err:
            self._failed(err)
            return False
        self._failures = 0
        return True

    def _failed(self, err: Exception):
        if self.error is None:
            self.error = describe(err)
            print(
                f"warning: {self.error}; training goes on and the result file keeps every number "
                f"(`bench sync --profile {self.profile}` logs what the MLflow run misses)",
                file=sys.stderr,
                flush=True,
            )
        self._failures += 1
        self._paused_until = time.monotonic() + min(PAUSE_S[1], PAUSE_S[0] * 2 ** (self._failures - 1))

    def _open(self, resume_run_id: str | None = None):
        from mlflow.entities import RunTag

        self.client = self.client or open_client()
        if resume_run_id:
            try:
                retry(self.client.update_run, resume_run_id, status="RUNNING")
                self.experiment_id = self.client.get_run(resume_run_id).info.experiment_id
                self.run_id, self._resumed = resume_run_id, True
                return
            except Exception:  # the store was reset meanwhile: a new run
                pass
        new = self._new
        exp_id = ensure_experiment(self.client, self.experiment)
        run = retry(
            self.client.create_run, exp_id, start_time=new["start_time"], run_name=new["run_name"], tags=new["tags"]
        )
        self.run_id, self.experiment_id = run.info.run_id, exp_id
        log_params(self.client, self.run_id, param_items(new["params"]))
        retry(self.client.log_batch, self.run_id, tags=[RunTag("mlflow.source.name", "bench run")])
        if new["datasets"]:
            retry(self.client.log_inputs, self.run_id, datasets=new["datasets"])

    def _ready(self, force: bool = False) -> bool:
        return self.run_id is not None or self._attempt(self._open, force=force)

    def log_metrics(self, metrics: dict, step: int | None = None, timestamp_ms: int | None = None):
        """Log metrics at `step` (0 by default) and `timestamp_ms` (now by default)."""
        items = metric_items(metrics, step or 0, timestamp_ms or now_ms())
        times = {k: metrics[k] for k in ("epoch_time_s", "eval_time_s") if k in metrics}
        if step and times:
            self._epoch_times[step] = times
        if not (self._ready() and self._attempt(lambda: retry(self.client.log_batch, self.run_id, metrics=items))):
            self.unlogged += len(items)

    def log_final(self, metrics: dict):
        """The run's final metrics, as final_<name> at step 0, and beside them the values its cells read
        (cell_metrics: the kinds its claimed_* tags name), at the same time."""
        self.final_time_ms = now_ms()
        keys, cfg = cell_keys(self._new["tags"]), self._new["params"]
        timed_by_epochs = cfg.get("timing") == "fit_with_validation" and "staged_wall_time_s" not in metrics
        epochs = self._epochs() if timed_by_epochs and any(k.startswith("train_time") for k in keys) else None
        cells = cell_metrics(keys, metrics, cfg, epochs)
        self.log_metrics({**{f"final_{k}": v for k, v in metrics.items()}, **cells}, timestamp_ms=self.final_time_ms)

    def _epochs(self) -> list | None:
        """Every epoch's times, for a paper that times its epochs with their evaluations: this process's, and for a
        resumed run the earlier ones from the store (None when the store lacks some: `bench sync` adds the value
        from the result file)."""
        times = dict(self._epoch_times)
        if self._resumed and self._ready():

            def read():
                for key in ("epoch_time_s", "eval_time_s"):
                    for m in retry(self.client.get_metric_history, self.run_id, key):
                        times.setdefault(m.step, {})[key] = m.value

            if not self._attempt(read):
                return None
            if times and sorted(times) != list(range(1, max(times) + 1)):  # some epoch is in neither
                return None
        return [times[k] for k in sorted(times)]

    def set_tag(self, key: str, value: str):
        if self._ready():
            self._attempt(lambda: retry(self.client.set_tag, self.run_id, key, str(value)[:5000]))

    def finish(self, status: str = "FINISHED"):
        """The run's end, tried even while logging is paused (the last chance; what fails here, `bench sync`
        repairs)."""
        if self._ready(force=True):
            self._attempt(lambda: retry(self.client.set_terminated, self.run_id, status), force=True)

    def info(self) -> dict:
        return {
            "tracking_uri": redact(tracking_uri()),
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "error": self.error,
            "unlogged_points": self.unlogged,
            "start_time_ms": self._new["start_time"],
            "final_time_ms": self.final_time_ms,
        }


def retire(run_id: str, replaced_by: str | None) -> str | None:
    """A run that a forced rerun replaced: tagged superseded_by its replacement, then deleted (MLflow keeps deleted
    runs until `mlflow gc`), so each result file has one live run. Returns the error instead of raising: the
    result file is the truth, the store a side channel."""
    try:
        client = open_client()
        retry(client.set_tag, run_id, "superseded_by", replaced_by or "")
        retry(client.delete_run, run_id)
    except Exception as err:
        return describe(err)
    return None


def prepare(profile: str, papers: list[str], touch: str | None = None):
    """`bench setup`: the store and the profile's experiments created before the jobs fan out, said on stdout; a
    store that does not answer is a warning (the jobs train without it, `bench sync` logs them later). `touch`: the
    marker file Snakemake waits for, holding the store's URI (credentials redacted). A URI no store can be opened
    at (StoreURIError: a typo, a missing folder) is an error, not a warning: no job could ever log to it."""
    try:
        ids = setup(profile, papers)
        print(f"MLflow store {redact(tracking_uri())}: experiments " + ", ".join(f"{p} ({i})" for p, i in ids.items()))
    except StoreURIError:
        raise
    except Exception as err:  # the jobs train without the store; bench sync logs them once it answers
        print(
            f"warning: {describe(err)}; the jobs train without it and say so, `bench sync --profile "
            f"{profile}` logs their runs once it answers",
            file=sys.stderr,
        )
    if touch:
        Path(touch).parent.mkdir(parents=True, exist_ok=True)
        Path(touch).write_text(redact(tracking_uri()) + "\n")
