"""The papers' printed numbers checked against each other, from the registry alone (no training).

Each check yields findings, one line each, naming the registry rows involved:
* derived cells recomputed from the cells of the same row they derive from (a time saving from the times, Eq. 5;
  a FLOPs reduction from the FLOPs), allowing for the rounding of every printed number (interval arithmetic);
* averages stated in the text against the mean of the cells they average;
* the same configuration (paper, dataset, model, method, variant, metric) printed twice with different values;
* impossible or suspicious prints: a minutes:seconds value with 60 or more seconds, an accuracy at or below chance
  level for the dataset's class count, an error at or above it, two columns of a table identical in every row;
* every headline claim (bench/claims/headlines.yaml) on the printed numbers: "holds as printed?" (a claim that
  does not is a finding).
`bench audit` writes them to reports/audit.md with the epochs the printed times imply and the findings of the
suite's own runs (bench/report/audit.py).
"""

from collections import defaultdict
from itertools import combinations

from bench.claims.registry import Claim, half_ulp, load_claims, members


def _interval(claim: Claim) -> tuple[float, float]:
    h = half_ulp(claim.printed)
    return claim.value - h, claim.value + h


def relative_change_range(base: Claim, other: Claim) -> tuple[float, float]:
    """The range of 100 (base - other) / base over the printed numbers' rounding intervals."""
    (b_lo, b_hi), (o_lo, o_hi) = _interval(base), _interval(other)
    corners = [100.0 * (b - o) / b for b in (b_lo, b_hi) for o in (o_lo, o_hi) if b > 0]
    return min(corners), max(corners)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def check_relative(claims: list[Claim]) -> list[str]:
    """Time savings (Eq. 5) and FLOPs reductions against the absolute cells of their row."""
    sources = {"time_saving_pct": "train_time", "flops_reduction_pct": "flops"}
    index = {(c.paper, c.table, c.row, c.method, c.metric): c for c in claims}
    out = []
    for c in claims:
        if c.metric not in sources or c.derived_from:
            continue
        mine = index.get((c.paper, c.table, c.row, c.method, sources[c.metric]))
        base = index.get((c.paper, c.table, c.row, c.baseline_method, sources[c.metric]))
        if mine is None or base is None:
            continue
        lo, hi = relative_change_range(base, mine)
        h = half_ulp(c.printed)
        if not lo - h <= c.value <= hi + h:
            exact = 100.0 * (base.value - mine.value) / base.value
            out.append(
                f"DERIVED {c.id}: printed {c.printed}, but {base.id} ({base.printed}) and {mine.id} "
                f"({mine.printed}) give {_fmt(exact)} (any rounding of the printed numbers: "
                f"{_fmt(lo)} to {_fmt(hi)})"
            )
    return out


def check_averages(claims: list[Claim]) -> list[str]:
    out = []
    for c in claims:
        if not c.derived_from:
            continue
        parts = members(c, claims)
        if not parts:
            out.append(f"AVERAGE {c.id}: derives from '{c.derived_from}', which matches no cell")
            continue
        mean = sum(p.value for p in parts) / len(parts)
        spread = sum(half_ulp(p.printed) for p in parts) / len(parts) + half_ulp(c.printed)
        if abs(mean - c.value) > spread:
            out.append(
                f"AVERAGE {c.id}: printed {c.printed}, but the mean of its {len(parts)} cells "
                f"({c.derived_from}) is {_fmt(mean)}"
            )
    return out


def check_duplicates(claims: list[Claim]) -> list[str]:
    groups = defaultdict(list)
    for c in claims:
        if c.dataset and c.model and not c.derived_from:
            groups[(c.paper, c.dataset, c.model, c.method, c.variant, c.part, c.metric, c.unit)].append(c)
    out = []
    for key, cells in sorted(groups.items()):
        values = sorted({c.value for c in cells})
        if len(cells) > 1 and max(values) - min(values) > max(half_ulp(c.printed) for c in cells) * 2:
            listing = ", ".join(f"{c.id} = {c.printed}" for c in cells)
            out.append(
                f"TWICE {key[0]} {key[1]} {key[2]} {key[3]}{'/' + key[4] if key[4] else ''} {key[6]}: "
                f"the same configuration printed with different values: {listing}"
            )
    return out


def check_suspicious(claims: list[Claim], num_classes: dict[str, int]) -> list[str]:
    out = []
    for c in claims:
        if ":" in c.printed:
            seconds = c.printed.split(":")[-1].split()[0]
            if seconds.replace(".", "").isdigit() and float(seconds) >= 60:
                out.append(f"SECONDS {c.id}: printed {c.printed}, a seconds field of {seconds} (>= 60)")
        k = num_classes.get(c.dataset)
        if k and c.unit == "%":
            chance = 100.0 / k
            if c.metric == "test_accuracy" and c.value <= chance * 1.05:
                out.append(
                    f"CHANCE {c.id}: accuracy {c.printed} is at or below chance level for {k} classes "
                    f"({_fmt(chance)} %)"
                )
            if c.metric == "test_error" and c.value >= 100.0 - chance * 1.05:
                out.append(
                    f"CHANCE {c.id}: error {c.printed} is at or above chance level for {k} classes "
                    f"({_fmt(100 - chance)} %)"
                )
    return out


def check_identical_columns(claims: list[Claim], min_rows: int = 3, augmented=None) -> list[str]:
    """Two columns of one table with the same metric and the same printed value in every row they share;
    `augmented(claim)`: whether the cell's run sees augmented images (None: unknown), to say where equality is
    expected (bench.report.audit.augmented, from the grids)."""
    tables = defaultdict(lambda: defaultdict(dict))
    for c in claims:
        tables[(c.paper, c.table)][(c.column, c.metric)][c.row] = c
    out = []
    for (paper, table), cols in sorted(tables.items()):
        for (a, ma), (b, mb) in combinations(sorted(cols), 2):
            if ma != mb:
                continue
            shared = sorted(set(cols[(a, ma)]) & set(cols[(b, mb)]))
            if len(shared) >= min_rows and all(cols[(a, ma)][r].printed == cols[(b, mb)][r].printed for r in shared):
                out.append(
                    f"IDENTICAL {paper} table {table}: columns '{a}' and '{b}' print the same value in all "
                    f"{len(shared)} rows they share (e.g. {cols[(a, ma)][shared[0]].id} = "
                    f"{cols[(b, mb)][shared[0]].id} = {cols[(a, ma)][shared[0]].printed})"
                    + _augmentation_note([cols[(a, ma)][r] for r in shared], augmented)
                )
    return out


def _augmentation_note(cells: list[Claim], augmented) -> str:
    """Where identical columns are expected and where not: two methods that compute the same thing on the same data
    print the same numbers with deterministic kernels, but a run that trains on stored maps (one augmentation draw)
    and one that augments every epoch do not, so the rows are split by whether their runs augment."""
    by = defaultdict(list)
    for c in cells:
        aug = augmented(c) if augmented else None
        if aug is not None:
            by[aug].append(c.dataset)
    if not by:
        return ""
    names = lambda flag: ", ".join(sorted(set(by[flag])))  # noqa: E731
    parts = []
    if by[False]:
        parts.append(
            f"without augmentation ({names(False)}: {len(by[False])} rows) equal values are what two methods "
            "computing the same thing give with deterministic kernels"
        )
    if by[True]:
        parts.append(
            f"with augmentation ({names(True)}: {len(by[True])} rows, in the grid's reading) they are "
            "unexpected for two runs that see different augmented images (a run on stored maps sees one "
            "draw), unless the authors trained without it"
        )
    return "; " + "; ".join(parts)


def headline_checks(claims: list[Claim], heads=None) -> dict[str, list[tuple[bool, str]]]:
    """paper -> (holds as printed?, "<claim id> (<where>, <relation>): ...") for every headline claim."""
    from bench.claims.headlines import as_printed, load_headlines

    heads = load_headlines() if heads is None else heads
    printed = {c.id: c.value for c in claims}
    out = defaultdict(list)
    for h in heads:
        if not all(i in printed for i in h.cell_ids()):
            continue
        ok, numbers = as_printed(h, printed)
        cells = ", ".join(h.cell_ids())
        out[h.paper].append(
            (
                ok,
                f"{h.id} ({h.where}, {h.relation}) {'holds' if ok else 'does NOT hold'} "
                f"as printed ({numbers}); cells {cells}",
            )
        )
    return out


def findings(
    claims: list[Claim] | None = None, num_classes: dict[str, int] | None = None, heads=None, augmented=None
) -> dict[str, list[str]]:
    """paper -> its findings, in a fixed order (check, then registry order); `augmented`: see
    check_identical_columns."""
    claims = load_claims() if claims is None else claims
    headline = headline_checks(claims, heads)
    if num_classes is None:
        from bench.claims.datasets import DATASETS

        num_classes = {name: info.num_classes for name, info in DATASETS.items()}
    out = {}
    for paper in sorted({c.paper for c in claims}):
        mine = [c for c in claims if c.paper == paper]
        out[paper] = (
            check_relative(mine)
            + check_averages(mine)
            + check_duplicates(mine)
            + check_suspicious(mine, num_classes)
            + check_identical_columns(mine, augmented=augmented)
            + [f"HEADLINE {line}" for ok, line in headline.get(paper, []) if not ok]
        )
    return out
