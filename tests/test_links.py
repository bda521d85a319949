"""The repository's docs live in docs/ and every pointer into them resolves.

(a) A mention of methods.md or design.md anywhere in the code, data, tests or docs is a path to a file in docs/
    that exists (the old ../shared/methods.md and design.md are not part of a clone).
(b) Every relative Markdown link of README.md, CONTRIBUTING.md, CHANGELOG.md and docs/**/*.md resolves to a file,
    and a link's #anchor into a Markdown file names one of its headings (GitHub's anchors).
(c) Every `docs/<...>.md[#anchor]` a comment, docstring, data file or page names (from the repository root) exists,
    with its heading.
"""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("bench", "workflows", "tests", "docs", "Snakefile", "README.md", "CONTRIBUTING.md", "CHANGELOG.md")
PAGES = ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "docs")
SUFFIXES = {".py", ".smk", ".yaml", ".yml", ".csv", ".md", ".sh", ".txt", ".toml", ".cfg", ".json", ""}

OLD_DOC = re.compile(r"[\w./-]*(?<![\w-])(?:methods|design)\.md(?:#[\w-]+)?")
DOCS_REF = re.compile(r"(?<![\w./-])docs/[\w./-]*?\.md(?:#[\w-]+)?")
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links to their text, code marks dropped), lower case, every
    character but letters, digits, '_', '-' and spaces removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def strip_fences(text: str) -> str:
    """The text with fenced code blocks blanked (their lines kept, so line numbers stay)."""
    out, inside = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            inside = not inside
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def anchors(md: Path) -> set[str]:
    """Every anchor GitHub gives the headings of a Markdown file (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in strip_fences(md.read_text(encoding="utf-8")).split("\n"):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def text_files(root: Path, names=SCANNED):
    for name in names:
        path = root / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix in SUFFIXES and "__pycache__" not in f.parts and f.name != "test_links.py":
                    yield f


def read(f: Path) -> str | None:
    try:
        return f.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def resolve(root: Path, base: Path, target: str) -> str:
    """'' when `target` (path[#anchor], relative to the folder `base`) names an existing file and heading."""
    path, _, anchor = target.partition("#")
    dest = (base / path).resolve() if path else None
    if dest is not None and not dest.exists():
        return "no such file"
    if anchor and (dest is None or dest.suffix == ".md"):
        md = dest
        if md is not None and md.is_dir():
            md = md / "README.md"
        if md is None or not md.is_file() or anchor not in anchors(md):
            return f"no heading #{anchor}"
    if dest is not None and root.resolve() not in dest.parents and dest != root.resolve():
        return "outside the repository"
    return ""


def old_doc_mentions(root: Path) -> list[str]:
    """(a): methods.md / design.md mentioned as anything but an existing file in docs/."""
    problems = []
    docs = (root / "docs").resolve()
    for f in text_files(root):
        text = read(f)
        if text is None:
            continue
        for number, line in enumerate(text.split("\n"), 1):
            for m in OLD_DOC.finditer(line):
                path = m.group(0).partition("#")[0]
                candidates = [(root / path).resolve(), (f.parent / path).resolve()]
                if not any(c.is_file() and docs in c.parents for c in candidates):
                    problems.append(f"{f.relative_to(root)}:{number}: {m.group(0)}: not a file in docs/")
    return problems


def markdown_links(root: Path) -> list[str]:
    """(b): relative links of the repository's Markdown pages."""
    problems = []
    for f in text_files(root, PAGES):
        if f.suffix != ".md":
            continue
        text = strip_fences(f.read_text(encoding="utf-8"))
        for number, line in enumerate(text.split("\n"), 1):
            for m in MD_LINK.finditer(line):
                target = m.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                    continue
                if target.startswith("#"):
                    why = "" if target[1:] in anchors(f) else f"no heading {target}"
                else:
                    why = resolve(root, f.parent, target)
                if why:
                    problems.append(f"{f.relative_to(root)}:{number}: ({target}): {why}")
    return problems


def docs_references(root: Path) -> list[str]:
    """(c): docs/<...>.md[#anchor] named from the repository root."""
    problems = []
    for f in text_files(root):
        text = read(f)
        if text is None:
            continue
        for number, line in enumerate(text.split("\n"), 1):
            for m in DOCS_REF.finditer(line):
                why = resolve(root, root, m.group(0))
                if why:
                    problems.append(f"{f.relative_to(root)}:{number}: {m.group(0)}: {why}")
    return problems


def test_no_mention_of_the_old_docs():
    assert old_doc_mentions(REPO) == []


def test_markdown_links_resolve():
    assert markdown_links(REPO) == []


def test_docs_references_resolve():
    assert docs_references(REPO) == []


def test_every_method_has_its_page():
    """The six method pages keep the numbered headings the code's references point at."""
    pages = {
        "predsim": ["11-one-local-loss-block", "13-defaults-and-recipes", "16-ambiguities"],
        "belilovsky": ["21-trunk", "22-auxiliary-heads", "23-schedule", "24-ambiguities"],
        "si-forward": ["31-separation-index", "32-training-loss", "33-algorithm", "34-baselines", "35-ambiguities"],
        "layer-to-layer": ["41-what-the-notebook-does", "42-ambiguities"],
        "learn-drop": ["51-score", "52-drop-rule", "53-ambiguities"],
        "cross-paper": [],
    }
    for page, expected in pages.items():
        assert set(expected) <= anchors(REPO / "docs" / "methods" / f"{page}.md"), page
    assert "36-vd-cnn" in anchors(REPO / "docs" / "methods" / "si-forward.md")


def test_the_slugs():
    assert slug("3.4 Baselines") == "34-baselines"
    assert slug("The `bench` command") == "the-bench-command"
    assert slug("What it costs: `bench plan`, `bench perf`") == "what-it-costs-bench-plan-bench-perf"
    assert slug("See [the design](design.md) here") == "see-the-design-here"


def test_the_checks_fail_on_broken_links(tmp_path):
    """Each check finds what it is for in a small tree: a stale methods.md citation, a link to a missing file, a
    link to a missing heading, a docs/ reference to a missing page or heading; and passes the good ones."""
    (tmp_path / "docs" / "methods").mkdir(parents=True)
    (tmp_path / "bench").mkdir()
    (tmp_path / "docs" / "methods" / "si-forward.md").write_text("# SI\n\n## 3.4 Baselines\n\ntext\n")
    (tmp_path / "docs" / "design.md").write_text(
        "# Design\n\n## The pipeline\n\nSee [baselines](methods/si-forward.md#34-baselines), [up](#the-pipeline).\n"
        "Broken: [gone](methods/nowhere.md), [bad anchor](methods/si-forward.md#35-ambiguities), [here](#nope).\n"
        "```\n[in code](not/checked.md)\n```\n"
    )
    (tmp_path / "README.md").write_text("[design](docs/design.md#the-pipeline) and [web](https://example.org)\n")
    (tmp_path / "bench" / "mod.py").write_text(
        '"""As methods.md 3.4 says; see docs/methods/si-forward.md#34-baselines and docs/design.md."""\n'
        "# docs/methods/si-forward.md#36-vd-cnn and docs/methods/predsim.md\n"
    )
    assert old_doc_mentions(tmp_path) == ["bench/mod.py:1: methods.md: not a file in docs/"]
    assert markdown_links(tmp_path) == [
        "docs/design.md:6: (methods/nowhere.md): no such file",
        "docs/design.md:6: (methods/si-forward.md#35-ambiguities): no heading #35-ambiguities",
        "docs/design.md:6: (#nope): no heading #nope",
    ]
    assert docs_references(tmp_path) == [
        "bench/mod.py:2: docs/methods/si-forward.md#36-vd-cnn: no heading #36-vd-cnn",
        "bench/mod.py:2: docs/methods/predsim.md: no such file",
    ]
