"""`bench sync`: the MLflow store rebuilt from the result files, which are the truth.

For every result file of a profile, the MLflow run it names is made whole in the current store
($MLFLOW_TRACKING_URI): the same run name, tags, params, dataset inputs and status as a live job logs, every
epoch's metrics at the step and timestamp the job logged them with (the record's `timestamp_ms`; a result from
before that key places each epoch at the end of its recorded times), and the final metrics at the time the job
logged them (the run's end for older files).
What is already there is never logged twice, so a second sync adds nothing. A run still named the old way (the
whole experiment id, `<experiment>/seed<k>`) is renamed to track.run_name's short form, and a run without the cell
metrics and claimed values (track.cell_metrics, track.claimed_tags) gets them.

Which run belongs to a result file: the run id the file records, when this store has it (a deleted one is
restored); else the run an earlier sync created for it (tag `synced_from`: the file's original run id, or
<profile>/<experiment>/seed<k>@<started> when it never had one); else a new run. When the run is not the one the
file records (results copied from another machine, a store deleted or moved, a job that could not reach the
store), the file's `mlflow` block is updated to point at it, so that reports link to runs this store holds; the
rest of the file is untouched. Copying `results/` from several machines and syncing once merges them.
"""

import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import BenchError
from bench import experiments as ex
from bench.run import results as result_files
from bench.run import track
from bench.run.epoch_log import EPOCH_KEYS
from bench.run.results import write_json_atomic

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def epoch_points(result: dict) -> list:
    """Every epoch's metrics as MLflow points: (key, step) -> Metric, at the time the job logged them."""
    start, elapsed, out = _ms(result["started"]), 0.0, {}
    for record in result["epochs"]:
        elapsed += sum(float(record.get(k, 0.0) or 0.0) for k in ("epoch_time_s", "eval_time_s"))
        stamp = int(record.get("timestamp_ms") or start + elapsed * 1000)
        metrics = {k: v for k, v in record.items() if k not in EPOCH_KEYS}
        for m in track.metric_items(metrics, int(record["epoch"]), stamp):
            out[(m.key, m.step)] = m
    return out


def final_points(result: dict, cell_keys=frozenset()) -> dict:
    """The final metrics a live job logs (final_<metric>, step 0) and the values of its cells of the kinds
    `cell_keys` (track.cell_metrics), at the time it logged them (else the run's end)."""
    stamp = result["mlflow"].get("final_time_ms") or _ms(result["finished"])
    cells = track.cell_metrics(cell_keys, result["metrics"], result.get("config", {}), result.get("epochs", []))
    return {
        m.key: m
        for m in track.metric_items({**{f"final_{k}": v for k, v in result["metrics"].items()}, **cells}, 0, stamp)
    }


def expected_tags(result: dict, claims: dict) -> dict:
    exp = ex.get(result["experiment"])
    cells = [claims[c] for c in result.get("cells", []) if c in claims]
    tags = track.run_tags(exp, result["seed"], result["profile"], cells, result["environment"], result.get("data", {}))
    tags["mlflow.source.name"] = "bench run"
    if result["status"] == "DIVERGED":
        tags["diverged"] = result.get("error", "")
    elif result["status"] == "FAILED":
        tags["error"] = result.get("error", "")
    if result.get("resumed_from_epoch"):
        tags["resumed_from_epoch"] = result["resumed_from_epoch"]
    return {k: str(v)[:5000] for k, v in tags.items()}


class Sync:
    def __init__(self, profile: str):
        from bench.claims.registry import load_claims

        self.profile = profile
        self.client = track.open_client()
        self.claims = {c.id: c for c in load_claims()}
        self.experiments = {}
        self.counts = {
            "files": 0,
            "invalid": 0,
            "created": 0,
            "restored": 0,
            "completed": 0,
            "complete": 0,
            "repointed": 0,
            "points": 0,
            "params": 0,
            "tags": 0,
            "statuses": 0,
            "inputs": 0,
            "renamed": 0,
        }

    def experiment_id(self, paper: str) -> str:
        if paper not in self.experiments:
            self.experiments[paper] = track.ensure_experiment(self.client, track.experiment_name(self.profile, paper))
        return self.experiments[paper]

    def find(self, result: dict, exp_id: str, origin: str):
        """The store's run for this result file, or None."""
        from mlflow.entities import ViewType

        run_id = result["mlflow"].get("run_id")
        if run_id:
            try:
                run = self.client.get_run(run_id)
            except Exception as err:
                if "RESOURCE_DOES_NOT_EXIST" not in str(err) and "not found" not in str(err).lower():
                    raise
                run = None
            tags = run.data.tags if run else {}
            if run and tags.get("experiment") == result["experiment"] and tags.get("seed") == str(result["seed"]):
                return self._live(run)
        found = self.client.search_runs(
            [exp_id], filter_string=f"tags.synced_from = '{origin}'", run_view_type=ViewType.ALL, max_results=1
        )
        return self._live(found[0]) if found else None

    def _live(self, run):
        if run.info.lifecycle_stage == "deleted":
            track.retry(self.client.restore_run, run.info.run_id)
            self.counts["restored"] += 1
            run = self.client.get_run(run.info.run_id)
        return run

    def create(self, result: dict, exp_id: str, origin: str):
        start = result["mlflow"].get("start_time_ms") or _ms(result["started"])
        run = track.retry(
            self.client.create_run,
            exp_id,
            start_time=start,
            run_name=track.run_name(expected_tags(result, self.claims)),
            tags={"synced_from": origin},
        )
        self.counts["created"] += 1
        return self.client.get_run(run.info.run_id)

    def fill(self, run, result: dict) -> int:
        """Log what the run lacks; the number of things logged."""
        from mlflow.entities import RunTag

        run_id, have = run.info.run_id, run.data
        added, expected = 0, expected_tags(result, self.claims)
        if run.info.run_name == track.legacy_run_name(result["experiment"], result["seed"]):
            track.retry(self.client.update_run, run_id, name=track.run_name(expected))
            self.counts["renamed"] += 1
            added += 1
        tags = [RunTag(k, v) for k, v in expected.items() if k not in have.tags]
        if tags:
            track.retry(self.client.log_batch, run_id, tags=tags)
            self.counts["tags"] += len(tags)
            added += len(tags)
        params = [p for p in track.param_items(result["config"]) if p.key not in have.params]
        if params:
            track.log_params(self.client, run_id, params)
            self.counts["params"] += len(params)
            added += len(params)
        if not run.inputs.dataset_inputs and result.get("data"):
            track.retry(self.client.log_inputs, run_id, datasets=track.dataset_inputs(result["data"]))
            self.counts["inputs"] += 1
            added += 1
        points = epoch_points(result)
        missing = []
        for key in sorted({k for k, _ in points}):
            logged = {m.step for m in self.client.get_metric_history(run_id, key)} if key in have.metrics else set()
            missing += [m for (k, step), m in points.items() if k == key and step not in logged]
        missing += [m for key, m in final_points(result, track.cell_keys(expected)).items() if key not in have.metrics]
        for i in range(0, len(missing), MAX_METRICS_PER_BATCH):
            track.retry(self.client.log_batch, run_id, metrics=missing[i : i + MAX_METRICS_PER_BATCH])
        self.counts["points"] += len(missing)
        added += len(missing)
        status = "FINISHED" if result["status"] == "FINISHED" else "FAILED"
        if run.info.status != status or not run.info.end_time:
            track.retry(self.client.set_terminated, run_id, status, end_time=_ms(result["finished"]))
            self.counts["statuses"] += 1
            added += 1
        return added

    def repoint(self, path: Path, result: dict, run, exp_id: str):
        """The result file's mlflow block names the run in this store (the file's numbers untouched)."""
        before = result["mlflow"]
        if (before.get("run_id"), before.get("experiment_id")) == (run.info.run_id, exp_id):
            return  # the same run (a store moved as a whole keeps its ids: the file stays as it is)
        result["mlflow"] = {
            **before,
            "tracking_uri": track.redact(track.tracking_uri()),
            "experiment": track.experiment_name(self.profile, ex.get(result["experiment"]).paper),
            "experiment_id": exp_id,
            "run_id": run.info.run_id,
            "synced": {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "from_tracking_uri": before.get("tracking_uri", ""),
                "from_run_id": before.get("run_id"),
            },
        }
        write_json_atomic(path, result)
        self.counts["repointed"] += 1

    def one(self, path: Path) -> str | None:
        """Sync one result file; a line saying what changed, or None."""
        experiment, seed = path.parent.name, int(path.stem[len("seed") :])
        self.counts["files"] += 1
        try:
            ex.get(experiment)
            result = result_files.load(path, self.profile, experiment, seed)
        except (BenchError, result_files.Invalid) as err:
            self.counts["invalid"] += 1
            return f"{path}: not synced, {err}"
        exp_id = self.experiment_id(ex.get(experiment).paper)
        origin = result["mlflow"].get("run_id") or f"{self.profile}/{experiment}/seed{seed}@{result['started']}"
        run = self.find(result, exp_id, origin)
        created = run is None
        if created:
            run = self.create(result, exp_id, origin)
        added = self.fill(run, result)
        self.repoint(path, result, run, exp_id)
        if created:
            return f"{experiment} seed {seed}: created run {run.info.run_id} ({added} items logged)"
        if added:
            self.counts["completed"] += 1
            return f"{experiment} seed {seed}: completed run {run.info.run_id} ({added} items logged)"
        self.counts["complete"] += 1
        return None


def sync(profile: str, results: Path | str = "results", out=sys.stdout) -> dict:
    """Make the store hold every result file's run, whole; returns the counts (what was created, filled, ...)."""
    ex.profile_settings(profile)
    runs = Path(results) / profile / "runs"
    if not runs.is_dir():  # a typo'd --results, or a profile never run here: say so, never "0 result files"
        raise BenchError(f"{runs}: no such folder (no {profile} runs under --results {results})")
    paths = [p for p in result_files.result_paths(profile, results) if p.stem[len("seed") :].isdigit()]
    try:
        job = Sync(profile)
        for path in paths:
            line = job.one(path)
            if line:
                print(line, file=out, flush=True)
    except BenchError:
        raise
    except Exception as err:  # the store went away or refused: one line; what was synced stays (run again)
        raise BenchError(
            f"{track.describe(err)}; nothing more was synced (run bench sync again once it answers)"
        ) from None
    return job.counts


def describe(profile: str, counts: dict) -> str:
    """The line `bench sync` ends with: what it found and what it logged."""
    c = counts
    return (
        f"bench sync {profile} into {track.redact(track.tracking_uri())}: "
        f"{c['files']} result files; runs created {c['created']}, completed {c['completed']}, already complete "
        f"{c['complete']}, restored {c['restored']}; logged {c['points']} metric points, {c['params']} params, "
        f"{c['tags']} tags, {c['inputs']} dataset inputs, {c['statuses']} end states; runs renamed "
        f"{c['renamed']}; result files repointed {c['repointed']}"
        + (f"; {c['invalid']} invalid files not synced" if c["invalid"] else "")
    )
