"""Result files: where they live (`run_path`), written whole or not at all (`write_json_atomic`), and checked before
they count.

A result file (results/<profile>/runs/<experiment>/seed<k>.json, written by `bench run`) is the source of truth
of every reproduced number, so aggregate, report, figures, plan and audit read it only through `load` (a profile's
files: `load_results`), which returns the file's contents or the reason it cannot be used:

- it is a JSON object with the keys and types a run writes (experiment, seed, profile, status, metrics,
  environment, mlflow, config, epochs);
- the experiment, profile and seed inside are the ones its path names (a file copied from another profile or
  experiment, or renamed to another seed, is foreign);
- its config is the experiment's resolved config for that profile today, provenance text aside (a file trained
  under another grid or profile setting is stale: rerun it);
- a FINISHED run's metrics are finite numbers within their physical range (accuracies and errors 0-100 %, times,
  memory, counts not negative).

A model measurement file (results/<profile>/models/<paper>-<model>.json, written by `bench measure`) is checked
the same way by `load_measurement`: its id, paper and model are the ones its name gives, its conventions are the
ones the paper's grid lists today (names, datasets, input shapes), and every count is a whole number >= 0.

An invalid file contributes nothing: its cells read INVALID with the reason, and `bench aggregate` stops with a
non-zero exit after writing them unless told to skip invalid files.
"""

import json
import math
import os
import tempfile
from pathlib import Path

from bench import experiments as ex

STATUSES = ("FINISHED", "DIVERGED", "FAILED")
REQUIRED = {
    "experiment": str,
    "seed": int,
    "profile": str,
    "status": str,
    "metrics": dict,
    "environment": dict,
    "mlflow": dict,
    "config": dict,
    "epochs": list,
}
PERCENT = ("accuracy", "error")  # metric names holding a percentage
NOT_NEGATIVE = ("_s", "_mb", "_time", "params", "macs", "flops", "epochs", "samples")


class Invalid(Exception):
    """A result file that cannot be used; str() is the reason."""


def _type_name(t) -> str:
    return {str: "a string", int: "an integer", dict: "an object", list: "a list"}[t]


def _differences(a, b, prefix="") -> list[str]:
    """Dotted keys at which two configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{prefix}{k}")
            else:
                out += _differences(a[k], b[k], f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "config"]


def non_finite(metrics: dict) -> str:
    """The first metric that is a NaN or infinite number ('' when none is)."""
    return next(
        (k for k, v in metrics.items() if isinstance(v, float) and not isinstance(v, bool) and not math.isfinite(v)), ""
    )


def check_metrics(metrics: dict):
    """A FINISHED run's metrics: test_accuracy a number; every number finite; percentages 0-100; times, memory and
    counts not negative; a text only where no number is expected (a description, not a percentage or time)."""
    for key, value in metrics.items():
        numeric = key == "test_accuracy" or any(w in key for w in PERCENT) or key.endswith(NOT_NEGATIVE)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if (value is None and key != "test_accuracy") or (isinstance(value, str) and not numeric):
                continue
            raise Invalid(f"metrics.{key} is {type(value).__name__}, not a number")
        if not math.isfinite(value):
            raise Invalid(f"metrics.{key} is {value} (a FINISHED run's metrics are finite)")
        if any(word in key for word in PERCENT) and not 0.0 <= value <= 100.0:
            raise Invalid(f"metrics.{key} is {value:g}, outside 0-100 %")
        if key.endswith(NOT_NEGATIVE) and value < 0:
            raise Invalid(f"metrics.{key} is {value:g}, below zero")


def validate(result, profile: str, experiment_id: str, seed: int, expected_config: dict | None = None) -> dict:
    """The result if it may be used for (profile, experiment, seed), else Invalid with the reason."""
    if not isinstance(result, dict):
        raise Invalid(f"holds a JSON {type(result).__name__}, not an object")
    for key, kind in REQUIRED.items():
        if key not in result:
            raise Invalid(f"has no '{key}'")
        if not isinstance(result[key], kind) or (kind is int and isinstance(result[key], bool)):
            raise Invalid(f"'{key}' is not {_type_name(kind)}")
    for key, want in (("experiment", experiment_id), ("profile", profile), ("seed", seed)):
        if result[key] != want:
            raise Invalid(f"holds {key} {result[key]!r}, not the {want!r} its path names (a copied or renamed file)")
    if result["status"] not in STATUSES:
        raise Invalid(f"status {result['status']!r} is none of {', '.join(STATUSES)}")
    if expected_config is not None:
        drop = lambda c: {k: v for k, v in c.items() if k != "sources"}  # noqa: E731  provenance text only
        diff = _differences(drop(result["config"]), drop(expected_config))
        if diff:
            raise Invalid(
                f"stale: trained under another config for this experiment and profile ({', '.join(diff[:3])}"
                f"{', ...' if len(diff) > 3 else ''} differ); rerun it"
            )
    if result["status"] == "FINISHED":
        if "test_accuracy" not in result["metrics"]:
            raise Invalid("a FINISHED run without metrics.test_accuracy")
        check_metrics(result["metrics"])
    return result


def result_paths(profile: str, results: Path | str = "results") -> list[Path]:
    """Every result file of a profile (results/<profile>/runs/<experiment>/seed*.json), in path order."""
    return sorted((Path(results) / profile / "runs").glob("*/seed*.json"))


def run_path(profile: str, experiment_id: str, seed: int, results: Path | str = "results") -> Path:
    return Path(results) / profile / "runs" / experiment_id / f"seed{seed}.json"


def write_json_atomic(path: Path, data: dict):
    """Write to a temporary file in the same folder, then rename: a killed job never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not err.filename:  # a write with no space left names no file: this one
            err.filename = str(path)
        raise


def load(path: Path, profile: str, experiment_id: str, seed: int, expected_config: dict | None = None) -> dict:
    """Read and validate one result file; Invalid says why it cannot be used."""
    return validate(_read_json(path), profile, experiment_id, seed, expected_config)


def load_results(profile: str, seeds: list[int], results: Path | str = "results", invalid: dict | None = None) -> dict:
    """(experiment id, seed) -> result dict, for every valid result file present (`load`); the invalid
    ones go to `invalid` as (experiment id, seed) -> "path: reason" when it is given, and are never used."""
    found = {}
    for eid, exp in ex.experiments().items():
        expected = None
        for seed in seeds:
            path = run_path(profile, eid, seed, results)
            if path.exists():
                expected = expected or ex.config(exp, profile)
                try:
                    found[(eid, seed)] = load(path, profile, eid, seed, expected)
                except Invalid as err:
                    if invalid is not None:
                        invalid[(eid, seed)] = f"{path}: {err}"
    return found


def validate_measurement(result, mid: str, paper: str, model: str, spec: dict, parts=()) -> dict:
    """A model measurement if it may be used for `mid` under the grid's measurement `spec` (its conventions and
    primary reading) today, counting the named `parts` the cells ask for, else Invalid."""
    conventions = spec["conventions"]
    if not isinstance(result, dict):
        raise Invalid(f"holds a JSON {type(result).__name__}, not an object")
    for key, kind in (("id", str), ("paper", str), ("model", str), ("primary", dict), ("conventions", list)):
        if not isinstance(result.get(key), kind):
            raise Invalid(f"has no '{key}'" if key not in result else f"'{key}' is not {_type_name(kind)}")
    for key, want in (("id", mid), ("paper", paper), ("model", model)):
        if result[key] != want:
            raise Invalid(f"holds {key} {result[key]!r}, not the {want!r} its name gives (a copied or renamed file)")
    rows = result["conventions"]
    names = [c.get("name") if isinstance(c, dict) else None for c in rows]
    want_names = [c["name"] for c in conventions]
    if names != want_names:
        raise Invalid(f"stale: measured under conventions {names}, the grid lists {want_names} today; rerun it")
    for conv, row in zip(conventions, rows):
        if row.get("dataset") != conv["dataset"]:
            raise Invalid(
                f"stale: convention {conv['name']} measured on {row.get('dataset')!r}, the grid says "
                f"{conv['dataset']!r}; rerun it"
            )
        counts = [("params_total", row.get("params_total"))]
        for group in ("params_parts", "macs", "flops"):
            if not isinstance(row.get(group), dict) or not row[group]:
                raise Invalid(f"conventions.{conv['name']}.{group} is missing or empty")
            counts += [(f"{group}.{k}", v) for k, v in row[group].items()]
        for key, value in counts:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise Invalid(f"conventions.{conv['name']}.{key} is {value!r}, not a whole number >= 0")
    if result["primary"] != spec["primary"]:
        raise Invalid(f"stale: primary reading {result['primary']}, the grid says {spec['primary']} today; rerun it")
    primary = rows[want_names.index(spec["primary"]["convention"])]
    if spec["primary"]["backend"] not in primary["macs"]:
        raise Invalid(f"primary backend {spec['primary']['backend']!r} has no MAC count")
    missing = sorted(set(parts) - set(primary["params_parts"]))
    if missing:
        raise Invalid(f"counts no parameters for {', '.join(missing)}, which cells ask for; rerun it")
    return result


def _read_json(path: Path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise Invalid(f"is not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise Invalid(
            f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}: "
            f"{'empty or truncated' if not text.strip() or err.pos >= len(text.rstrip()) else 'corrupt'})"
        ) from None


def load_measurement(path: Path, mid: str, paper: str, model: str, spec: dict, parts=()) -> dict:
    """Read and validate one model measurement file; Invalid says why it cannot be used."""
    return validate_measurement(_read_json(path), mid, paper, model, spec, parts)
