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

MAX_PARAMS_PER_BATCH = 100
# MLflow's HTTP client retries a failed call 7 times with a backoff factor of 2 (minutes per call) unless told
# otherwise; these bound one call to about RETRY_WINDOW_S seconds (0 + 2 + 4 s of backoff plus up to 1 s of jitter
# each; refused connections fail at once). A user's own setting of any of them wins.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
RETRY_WINDOW_S = 10.0
SQL_ENGINE_RETRIES = 5  # MLflow's retries of a SQL store's connection (0.1 x (2^k - 1) s each); SQLite keeps its 10
PAUSE_S = (30.0, 600.0)  # after a failed call, live logging pauses 30 s, doubling up to 10 min while it keeps failing
_CREDENTIALS = re.compile(r"([a-zA-Z][\w+.-]*://)[^/@\s'\"]+@")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


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


def open_client():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for key, value in HTTP_RETRIES.items():
        os.environ.setdefault(key, value)
    # their per-retry warnings (several lines each): describe()'s one line instead
    for name in ("urllib3", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if not uri.startswith("sqlite:"):  # a SQL server that refuses: MLflow's 10 engine retries take 100 s, 5 take 3 s
        from mlflow.store.db import utils as db_utils

        db_utils.MAX_RETRY_COUNT = min(getattr(db_utils, "MAX_RETRY_COUNT", SQL_ENGINE_RETRIES), SQL_ENGINE_RETRIES)
    return MlflowClient(uri)


def retry(fn, *args, attempts: int = 8, **kwargs):
    """fn(...), again while SQLite reports a locked database or two jobs race to insert the same row (a dataset
    both log); MLflow wraps these in several exception types."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            text = str(err).lower()
            if not any(w in text for w in ("locked", "unique constraint", "duplicate key")) \
                    or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt * (0.5 + random.random()))


def describe(err: BaseException, uri: str | None = None) -> str:
    """One line saying why the store cannot be used, credentials removed: unreachable, refused credentials, not an
    MLflow server, or else the first line of MLflow's own message."""
    text = redact_text(str(err))
    low = text.lower()
    http = re.search(r"endpoint (\S+) failed with error code (\d{3})", text)
    if "authentication failed" in low:
        user = re.search(r'for user "([^"]+)"', text)
        why = "the database refused the credentials (password authentication failed" + \
              (f" for user {user.group(1)})" if user else ")")
    elif http and http.group(2) in ("401", "403"):
        why = f"the server refused the credentials (HTTP {http.group(2)} for {http.group(1)})"
    elif http and ("<html" in low or "<!doctype" in low or http.group(2) in ("404", "405", "501")):
        why = f"not an MLflow tracking server (HTTP {http.group(2)} for {http.group(1)})"
    elif "connection refused" in low:
        why = "unreachable (connection refused)"
    elif any(w in low for w in ("name or service not known", "could not translate host name", "nodename nor servname",
                                "temporary failure in name resolution", "failed to resolve")):
        why = "unreachable (unknown host)"
    elif "timed out" in low or "timeout" in low:
        why = "unreachable (timed out)"
    else:
        first = text.strip().splitlines()[0][:300] if text.strip() else "(no message)"
        why = f"{type(err).__name__}: {first}"
    return f"MLflow tracking at {redact(uri or tracking_uri())}: {why}"


def ensure_experiment(client, name: str) -> str:
    found = retry(client.get_experiment_by_name, name)
    if found is not None:
        return found.experiment_id
    try:
        return retry(client.create_experiment, name)
    except Exception:
        found = retry(client.get_experiment_by_name, name)  # created by someone else meanwhile
        if found is None:
            raise
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


def run_tags(exp, seed: int, profile: str, cells: list, environment: dict, data: dict) -> dict:
    """The tags of an experiment's run: what it reproduces (paper, tables, cells), what ran (experiment, seed,
    profile, code, device, fast-step switches) and on what data; the same for a live job and for `bench sync`."""
    env = environment
    return {"paper": exp.paper, "tables": ",".join(sorted({c.table for c in cells})),
            "cells": ",".join(c.id for c in cells), "experiment": exp.id, "seed": seed, "profile": profile,
            "code_version": env.get("code_version", ""), "dataset": exp.dataset, "model": exp.model,
            "method": exp.method, "variant": exp.variant, "device": env.get("device", ""),
            "precision": env.get("precision", ""), "channels_last": env.get("channels_last", ""),
            "compile": env.get("compile", ""), "cuda_graphs": env.get("cuda_graphs", ""),
            "data_train_samples": data.get("train_samples", ""), "data_test_samples": data.get("test_samples", ""),
            "data_sha256": data.get("sha256", "")}


def dataset_inputs(data: dict) -> list:
    """The run's data as MLflow dataset inputs (the runs page's Dataset column): the training and the test split,
    each named <dataset>/<split> (context "training" or "evaluation"), with the SHA-256 of the splits' bytes as
    trained (its first 32 hex digits as MLflow's digest, all 64 in the profile) and the sample count."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    name, sha = data.get("dataset", "?"), str(data.get("sha256", ""))
    out = []
    for split, context in (("train", "training"), ("test", "evaluation")):
        dataset = Dataset(name=f"{name}/{split}", digest=sha[:32], source_type="layerwise-bench",
                          source=json.dumps({"uri": f"{data.get('source', '?')}:{name}/{split}"}),
                          profile=json.dumps({"num_rows": data.get(f"{split}_samples"), "sha256": sha}))
        out.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return out


def metric_items(metrics: dict, step: int, timestamp_ms: int) -> list:
    from mlflow.entities import Metric

    return [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]


def param_items(params: dict) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]


def log_params(client, run_id: str, params: list):
    for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
        retry(client.log_batch, run_id, params=params[i:i + MAX_PARAMS_PER_BATCH])


def now_ms() -> int:
    return int(time.time() * 1000)


class RunLogger:
    """One MLflow run, logged live. Never raises: a failing store is said once on stderr, kept in `error`, and live
    logging pauses (PAUSE_S) while training goes on; `unlogged` counts the metric points the store did not get,
    which `bench sync` fills in from the result file. A run that could not be created at the start is created at
    the next attempt (with the job's start time), so an outage costs points, never the run."""

    def __init__(self, profile: str, paper: str, run_name: str, tags: dict, params: dict,
                 resume_run_id: str | None = None, datasets: list | None = None):
        """A new run, or, for a job resumed from its checkpoint, the run it started (`resume_run_id`), which then
        goes on receiving the epochs' metrics (one MLflow run per result file, however often the job was killed)."""
        self.run_id, self.error, self.client, self.experiment_id = None, None, None, None
        self.experiment, self.profile = experiment_name(profile, paper), profile
        self.unlogged, self._failures, self._paused_until = 0, 0, 0.0
        self._new = {"run_name": run_name, "tags": {k: str(v) for k, v in tags.items()}, "params": params,
                     "datasets": datasets or [], "start_time": now_ms()}
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
            print(f"warning: {self.error}; training goes on and the result file keeps every number "
                  f"(`bench sync --profile {self.profile}` logs what the MLflow run misses)", file=sys.stderr,
                  flush=True)
        self._failures += 1
        self._paused_until = time.monotonic() + min(PAUSE_S[1], PAUSE_S[0] * 2 ** (self._failures - 1))

    def _open(self, resume_run_id: str | None = None):
        from mlflow.entities import RunTag

        self.client = self.client or open_client()
        if resume_run_id:
            try:
                retry(self.client.update_run, resume_run_id, status="RUNNING")
                self.experiment_id = self.client.get_run(resume_run_id).info.experiment_id
                self.run_id = resume_run_id
                return
            except Exception:  # the store was reset meanwhile: a new run
                pass
        new = self._new
        exp_id = ensure_experiment(self.client, self.experiment)
        run = retry(self.client.create_run, exp_id, start_time=new["start_time"], run_name=new["run_name"],
                    tags=new["tags"])
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
        if not (self._ready() and self._attempt(lambda: retry(self.client.log_batch, self.run_id, metrics=items))):
            self.unlogged += len(items)

    def log_final(self, metrics: dict):
        """The run's final metrics, as final_<name> at step 0."""
        self.final_time_ms = now_ms()
        self.log_metrics({f"final_{k}": v for k, v in metrics.items()}, timestamp_ms=self.final_time_ms)

    def set_tag(self, key: str, value: str):
        if self._ready():
            self._attempt(lambda: retry(self.client.set_tag, self.run_id, key, str(value)[:5000]))

    def finish(self, status: str = "FINISHED"):
        """The run's end, tried even while logging is paused (the last chance; what fails here, `bench sync`
        repairs)."""
        if self._ready(force=True):
            self._attempt(lambda: retry(self.client.set_terminated, self.run_id, status), force=True)

    def info(self) -> dict:
        return {"tracking_uri": redact(tracking_uri()), "experiment": self.experiment,
                "experiment_id": self.experiment_id, "run_id": self.run_id, "error": self.error,
                "unlogged_points": self.unlogged, "start_time_ms": self._new["start_time"],
                "final_time_ms": self.final_time_ms}


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
    marker file Snakemake waits for, holding the store's URI (credentials redacted)."""
    try:
        ids = setup(profile, papers)
        print(f"MLflow store {redact(tracking_uri())}: experiments " + ", ".join(f"{p} ({i})" for p, i in ids.items()))
    except Exception as err:  # the jobs train without the store; bench sync logs them once it answers
        print(f"warning: {describe(err)}; the jobs train without it and say so, `bench sync --profile "
              f"{profile}` logs their runs once it answers", file=sys.stderr)
    if touch:
        Path(touch).parent.mkdir(parents=True, exist_ok=True)
        Path(touch).write_text(redact(tracking_uri()) + "\n")
