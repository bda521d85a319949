"""The MLflow side channel: one MLflow run per (experiment, seed), for browsing.

The result files stay the source of truth; a logging failure is recorded in the result, never fatal. The
store is $MLFLOW_TRACKING_URI, else a SQLite file `mlflow.db` in the working directory (absolute URI).
`setup()` creates the store and every experiment once, before the jobs fan out, so that parallel jobs
never race to create them; every call retries while SQLite reports a locked database.
"""
import os
import random
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

MAX_PARAMS_PER_BATCH = 100


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def redact(uri: str) -> str:
    """The URI without its credentials (postgresql://user:secret@host/db -> postgresql://***@host/db): what result
    files, logs and reports may show. Credentials never leave the environment."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def experiment_name(profile: str, paper: str) -> str:
    return f"layerwise-bench/{profile}/{paper}"


def _client():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri())


def _retry(fn, *args, attempts: int = 8, **kwargs):
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MLflow wraps sqlite errors in several exception types
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt * (0.5 + random.random()))


def ensure_experiment(client, name: str) -> str:
    found = _retry(client.get_experiment_by_name, name)
    if found is not None:
        return found.experiment_id
    try:
        return _retry(client.create_experiment, name)
    except Exception:
        found = _retry(client.get_experiment_by_name, name)  # created by someone else meanwhile
        if found is None:
            raise
        return found.experiment_id


def setup(profile: str, papers: list[str]) -> dict:
    """Create the store and one MLflow experiment per paper for this profile; returns name -> id."""
    client = _client()
    return {p: ensure_experiment(client, experiment_name(profile, p)) for p in papers}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


class RunLogger:
    """One MLflow run. Every method swallows MLflow errors into `self.error` so training goes on."""

    def __init__(self, profile: str, paper: str, run_name: str, tags: dict, params: dict,
                 resume_run_id: str | None = None):
        """A new run, or, for a job resumed from its checkpoint, the run it started (`resume_run_id`), which then
        goes on receiving the epochs' metrics (one MLflow run per result file, however often the job was killed)."""
        self.run_id, self.error, self.client, self.experiment_id = None, None, None, None
        self.experiment = experiment_name(profile, paper)
        try:
            from mlflow.entities import Param, RunTag

            self.client = _client()
            if resume_run_id:
                try:
                    _retry(self.client.update_run, resume_run_id, status="RUNNING")
                    self.run_id = resume_run_id
                    self.experiment_id = self.client.get_run(resume_run_id).info.experiment_id
                    return
                except Exception:  # the store was reset meanwhile: a new run
                    pass
            exp_id = self.experiment_id = ensure_experiment(self.client, self.experiment)
            run = _retry(self.client.create_run, exp_id, run_name=run_name,
                         tags={k: str(v) for k, v in tags.items()})
            self.run_id = run.info.run_id
            items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                _retry(self.client.log_batch, self.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])
            _retry(self.client.log_batch, self.run_id, tags=[RunTag("mlflow.source.name", "bench run")])
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"

    def log_metrics(self, metrics: dict, step: int | None = None):
        if self.run_id is None:
            return
        try:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)]
            _retry(self.client.log_batch, self.run_id, metrics=items)
        except Exception as err:
            self.error = self.error or f"{type(err).__name__}: {err}"

    def set_tag(self, key: str, value: str):
        if self.run_id is None:
            return
        try:
            _retry(self.client.set_tag, self.run_id, key, str(value)[:5000])
        except Exception as err:
            self.error = self.error or f"{type(err).__name__}: {err}"

    def finish(self, status: str = "FINISHED"):
        if self.run_id is None:
            return
        try:
            _retry(self.client.set_terminated, self.run_id, status)
        except Exception as err:
            self.error = self.error or f"{type(err).__name__}: {err}"

    def info(self) -> dict:
        return {"tracking_uri": redact(tracking_uri()), "experiment": self.experiment,
                "experiment_id": self.experiment_id, "run_id": self.run_id, "error": self.error}


def retire(run_id: str, replaced_by: str | None) -> str | None:
    """A run that a forced rerun replaced: tagged superseded_by its replacement, then deleted (MLflow keeps deleted
    runs until `mlflow gc`), so each result file has one live run. Returns the error instead of raising: the
    result file is the truth, the store a side channel."""
    try:
        client = _client()
        _retry(client.set_tag, run_id, "superseded_by", replaced_by or "")
        _retry(client.delete_run, run_id)
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None
