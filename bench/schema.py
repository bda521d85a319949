"""The suite's YAML data files checked against JSON schemas (bench/schemas/), with messages that name the file,
the place in it and what is wrong: one BenchError for the first violation."""

from functools import cache
from pathlib import Path

import yaml

from bench import BenchError

SCHEMAS = Path(__file__).parent / "schemas"
# libyaml's parser where PyYAML has it (its wheels do): the same documents, several times faster than the pure-Python
# one, which every `bench` command and every job pays for the grids and the registry. An error is parsed again by the
# pure-Python parser, so the message (line, column, problem) is the same either way. Both refuse a key given twice
# in one mapping (_KeysOnce).


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping that names a key twice: problem_mark is the second, context_mark the first."""


class _KeysOnce:
    """A loader's mappings with each key once: YAML would keep the last of two equal keys without a word (a profile
    or a grid setting given twice, the first silently lost)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:  # as written, before merge keys (<<) bring in keys that may be overridden
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # not hashable: the constructor says so itself
                    continue
                if first is not key_node:
                    raise DuplicateKey(
                        "while constructing a mapping",
                        first.start_mark,
                        f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


class _SafeLoader(_KeysOnce, yaml.SafeLoader):
    pass


_FAST_LOADER = type("_FastLoader", (_KeysOnce, yaml.CSafeLoader), {}) if hasattr(yaml, "CSafeLoader") else _SafeLoader


def safe_load(text: str):
    try:
        return yaml.load(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        if _FAST_LOADER is _SafeLoader:
            raise
        return yaml.load(text, Loader=_SafeLoader)


@cache
def _schema(name: str) -> dict:
    return safe_load((SCHEMAS / f"{name}.schema.yaml").read_text(encoding="utf-8"))


def shown(path: Path | str) -> str:
    """A data file as a message names it: bench/grids/ma.yaml (relative to the package's folder), else as given."""
    try:
        return Path(path).resolve().relative_to(Path(__file__).resolve().parent.parent).as_posix()
    except ValueError:
        return str(path)


def load(path: Path | str, name: str | None = None):
    """A YAML data file read and, with `name`, checked against its schema; a syntax error, a key given twice in one
    mapping or a byte that is not UTF-8 is one BenchError naming the file and the line."""
    path = Path(path)
    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except DuplicateKey as err:
        mark = err.problem_mark
        raise BenchError(
            f"{shown(path)}: line {mark.line + 1}, column {mark.column + 1}: {err.problem}; "
            "YAML would keep only the last one"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise BenchError(
            f"{shown(path)}: YAML syntax error at {where}: {getattr(err, 'problem', None) or err}"
        ) from None
    except UnicodeDecodeError as err:
        raise BenchError(f"{shown(path)}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return check(data, name, path) if name else data


def check(data, name: str, path: Path | str):
    """Raise BenchError("<file>: at <where>: <what>") when `data` (read from `path`) breaks schema `name`."""
    import jsonschema

    errors = sorted(
        jsonschema.Draft202012Validator(_schema(name)).iter_errors(data),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "top level"
        raise BenchError(f"{shown(path)}: at {where}: {err.message}{_suggestion(err)}")
    return data


def _suggestion(err) -> str:
    """For an unknown key, the closest key the schema allows there ('; did you mean ...?'), else ''."""
    import difflib

    if err.validator != "additionalProperties" or not isinstance(err.instance, dict):
        return ""
    known = list(err.schema.get("properties", {}))
    hints = []
    for key in sorted(set(err.instance) - set(known)):
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        if close:
            hints.append(f"'{close[0]}' for '{key}'")
    return f"; did you mean {', '.join(hints)}?" if hints else f"; allowed: {', '.join(sorted(known))}"
