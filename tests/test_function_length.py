"""No function of the package is over 80 lines (issue 33): a long function is split into short ones with one job
each. Every function and method counts, nested ones too, from its `def` line (decorators left out) to its last."""

import ast
from pathlib import Path

from conftest import REPO

MAX_LINES = 80


def function_lengths(path: Path) -> list[tuple[int, str, int]]:
    """(line, name, length in lines) for every function and method defined in `path`, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))
    return [(node.lineno, node.name, node.end_lineno - node.lineno + 1) for node in functions]


def long_functions(root: Path, max_lines: int = MAX_LINES) -> list[str]:
    """'path:line name (N lines)' for every function under `root` longer than `max_lines`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root.parent).as_posix()
        for line, name, length in sorted(function_lengths(path)):
            if length > max_lines:
                out.append(f"{where}:{line} {name} ({length} lines)")
    return out


def test_no_function_is_over_80_lines():
    too_long = long_functions(REPO / "bench")
    assert not too_long, f"functions over {MAX_LINES} lines; split them:\n" + "\n".join(too_long)


def source_of_function(name: str, length: int, indent: str = "") -> str:
    """A function `length` lines long, its `def` line included."""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(length - 1))
    return f"{indent}def {name}():\n{body}"


def test_a_long_function_is_listed(tmp_path):
    """The check can fail: an 81-line method and a nested function are listed, an 80-line function is not."""
    package = tmp_path / "pkg"
    package.mkdir()
    fits = source_of_function("fits", 80)  # lines 1-80
    method = "class C:\n" + source_of_function("long_method", 81, "    ")  # lines 81-162
    outer = "def outer():\n" + source_of_function("inner", 81, "    ")  # lines 163-244
    (package / "m.py").write_text(fits + method + outer, encoding="utf-8")
    assert long_functions(package) == [
        "pkg/m.py:82 long_method (81 lines)",
        "pkg/m.py:163 outer (82 lines)",
        "pkg/m.py:164 inner (81 lines)",
    ]
