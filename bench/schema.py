"""The suite's YAML data files checked against JSON schemas (bench/schemas/), with messages that name the file,
the place in it and what is wrong: one BenchError for the first violation."""
from functools import cache
from pathlib import Path

import yaml

from bench import BenchError

SCHEMAS = Path(__file__).parent / "schemas"


@cache
def _schema(name: str) -> dict:
    with open(SCHEMAS / f"{name}.schema.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def check(data, name: str, path: Path | str):
    """Raise BenchError("<file>: at <where>: <what>") when `data` (read from `path`) breaks schema `name`."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(_schema(name)).iter_errors(data),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "top level"
        raise BenchError(f"{Path(path).name}: at {where}: {err.message}")
    return data
