"""The package's folders are the pipeline's stages, and imports only run down it: a module may import its own
stage and the stages before it, never a later one, and no module imports itself back through others.

Stages in order (bench/__init__.py says what each holds): the base (bench/__init__.py, bench/schema.py), claims,
experiments, data, models, methods, run, cost, verdicts, report, and the command line on top (bench/cli.py,
bench/__main__.py). Every import counts, the ones inside functions too: a lazy import is still a dependency."""

import ast
import re
from pathlib import Path

from conftest import REPO

STAGES = ["base", "claims", "experiments", "data", "models", "methods", "run", "cost", "verdicts", "report", "cli"]
TOP_MODULES = {"__init__": "base", "schema": "base", "experiments": "experiments", "cli": "cli", "__main__": "cli"}


def module_name(path: Path, root: Path) -> str:
    """bench/run/runner.py -> bench.run.runner; bench/run/__init__.py -> bench.run."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    """The stage of a module of the package: its folder under bench/, or the table above for the top modules."""
    parts = module.split(".")
    return "base" if len(parts) == 1 else TOP_MODULES.get(parts[1], parts[1])


def imports(path: Path, root: Path) -> list[tuple[int, str, str]]:
    """(line, the imported module of the package, the import as written) for every import of `path`, at any
    depth; `from bench.x import y` counts as bench.x.y when y is a module, else as bench.x."""
    package, source = root.name, path.read_text(encoding="utf-8")
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target == package or target.startswith(package + "."):
                found.append((node.lineno, target, ast.get_source_segment(source, node)))
    return found


def upward_imports(root: Path) -> list[str]:
    """'file:line: import ...: <stage> imports <later stage>' for every import of a later stage."""
    out = []
    for path in sorted(root.rglob("*.py")):
        mine = stage(module_name(path, root))
        for line, target, text in imports(path, root):
            theirs = stage(target)
            if STAGES.index(theirs) > STAGES.index(mine):
                where = path.relative_to(root.parent).as_posix()
                out.append(f"{where}:{line}: {' '.join(text.split())}: {mine} imports {theirs}, a later stage")
    return out


def import_cycles(root: Path) -> list[str]:
    """Each cycle of module imports, as 'a -> b -> a'."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        graph[module_name(path, root)] = {t for _, t, _ in imports(path, root)} - {module_name(path, root)}
    cycles, done, stack = [], set(), []

    def visit(node):
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node) :] + [node]))
            return
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    return cycles


def test_every_folder_of_the_package_is_a_stage():
    root = REPO / "bench"
    folders = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(STAGES) - {"base", "experiments", "cli"}
    tops = {p.stem for p in root.glob("*.py")}
    assert tops == set(TOP_MODULES)


def test_no_module_imports_a_later_stage():
    assert upward_imports(REPO / "bench") == []


def test_no_import_cycle():
    assert import_cycles(REPO / "bench") == []


def test_the_readme_shows_the_stages_in_order():
    """docs/design.md's "How it works" diagram and its layout table name the same stages, in the order of STAGES."""
    readme = (REPO / "docs/design.md").read_text(encoding="utf-8")
    how = readme.split("## How it works")[1].split("```")[1]
    layout = readme.split("### Layout")[1].split("\n\n")[1]
    diagram = re.findall(r"^(bench/\S+)", how, re.M)
    table = re.findall(r"^\| `(bench/[^`]+)` \|", layout, re.M)
    stages = [f"bench/{s}.py" if s == "experiments" else f"bench/{s}/" for s in STAGES[1:-1]]
    assert diagram == table == stages


def test_the_checks_find_an_upward_import_and_a_cycle(tmp_path):
    root = tmp_path / "bench"
    for folder in ("claims", "run"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "claims" / "registry.py").write_text("import os\n\n\ndef later():\n    from bench.run import runner\n")
    (root / "run" / "runner.py").write_text("from bench.claims import registry\n")
    assert upward_imports(root) == [
        "bench/claims/registry.py:5: from bench.run import runner: claims imports run, a later stage"
    ]
    assert import_cycles(root) == ["bench.claims.registry -> bench.run.runner -> bench.claims.registry"]
