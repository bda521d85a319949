"""`bench audit`: the papers' printed numbers checked against each other, from the registry alone (no training).

Each check yields findings, one line each, naming the registry rows involved:
* derived cells recomputed from the cells of the same row they derive from (a time saving from the times, Eq. 5;
  a FLOPs reduction from the FLOPs), allowing for the rounding of every printed number (interval arithmetic);
* averages stated in the text against the mean of the cells they average;
* the same configuration (paper, dataset, model, method, variant, metric) printed twice with different values;
* impossible or suspicious prints: a minutes:seconds value with 60 or more seconds, an accuracy at or below chance
  level for the dataset's class count, an error at or above it, two columns of a table identical in every row;
* every headline claim (bench/claims/headlines.yaml) on the printed numbers: "holds as printed?" (a claim that
  does not is a finding);
* the epochs every printed training time implies (bench.plan.implied_epochs): the cell's configured schedule read
  through `bench plan`'s cost model at the rate calibrated on the printed times of the paper that states its GPU,
  one line per time (its own section of each paper, beside the findings).
"""
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from bench.registry import Claim, half_ulp, load_claims, members, papers


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
            out.append(f"DERIVED {c.id}: printed {c.printed}, but {base.id} ({base.printed}) and {mine.id} "
                       f"({mine.printed}) give {_fmt(exact)} (any rounding of the printed numbers: "
                       f"{_fmt(lo)} to {_fmt(hi)})")
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
            out.append(f"AVERAGE {c.id}: printed {c.printed}, but the mean of its {len(parts)} cells "
                       f"({c.derived_from}) is {_fmt(mean)}")
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
            out.append(f"TWICE {key[0]} {key[1]} {key[2]} {key[3]}{'/' + key[4] if key[4] else ''} {key[6]}: "
                       f"the same configuration printed with different values: {listing}")
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
                out.append(f"CHANCE {c.id}: accuracy {c.printed} is at or below chance level for {k} classes "
                           f"({_fmt(chance)} %)")
            if c.metric == "test_error" and c.value >= 100.0 - chance * 1.05:
                out.append(f"CHANCE {c.id}: error {c.printed} is at or above chance level for {k} classes "
                           f"({_fmt(100 - chance)} %)")
    return out


def check_identical_columns(claims: list[Claim], min_rows: int = 3) -> list[str]:
    """Two columns of one table with the same metric and the same printed value in every row they share."""
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
                out.append(f"IDENTICAL {paper} table {table}: columns '{a}' and '{b}' print the same value in all "
                           f"{len(shared)} rows they share (e.g. {cols[(a, ma)][shared[0]].id} = "
                           f"{cols[(b, mb)][shared[0]].id} = {cols[(a, ma)][shared[0]].printed})")
    return out


def headline_checks(claims: list[Claim], heads=None) -> dict[str, list[tuple[bool, str]]]:
    """paper -> (holds as printed?, "<claim id> (<where>, <relation>): ...") for every headline claim."""
    from bench.headlines import as_printed, load_headlines

    heads = load_headlines() if heads is None else heads
    printed = {c.id: c.value for c in claims}
    out = defaultdict(list)
    for h in heads:
        if not all(i in printed for i in h.cell_ids()):
            continue
        ok, numbers = as_printed(h, printed)
        cells = ", ".join(h.cell_ids())
        out[h.paper].append((ok, f"{h.id} ({h.where}, {h.relation}) {'holds' if ok else 'does NOT hold'} "
                                 f"as printed ({numbers}); cells {cells}"))
    return out


def findings(claims: list[Claim] | None = None, num_classes: dict[str, int] | None = None,
             heads=None) -> dict[str, list[str]]:
    """paper -> its findings, in a fixed order (check, then registry order)."""
    claims = load_claims() if claims is None else claims
    headline = headline_checks(claims, heads)
    if num_classes is None:
        from bench.data.catalog import DATASETS

        num_classes = {name: info.num_classes for name, info in DATASETS.items()}
    out = {}
    for paper in sorted({c.paper for c in claims}):
        mine = [c for c in claims if c.paper == paper]
        out[paper] = (check_relative(mine) + check_averages(mine) + check_duplicates(mine)
                      + check_suspicious(mine, num_classes) + check_identical_columns(mine)
                      + [f"HEADLINE {line}" for ok, line in headline.get(paper, []) if not ok])
    return out


def _epochs(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def _schedule(stage_epochs: list[int]) -> str:
    if len(set(stage_epochs)) == 1:
        return f"{len(stage_epochs)} stages of {stage_epochs[0]:,}"
    if len(stage_epochs) <= 6:
        return " + ".join(map(str, stage_epochs))
    return f"{len(stage_epochs)} stages"


def implied_epochs_findings(rows: list[dict] | None = None, calibration: dict | None = None) -> dict[str, list[str]]:
    """paper -> "IMPLIED <claim id>: ..." per printed training time: the epochs it implies at the printed
    calibration's median rate and quartile rates (bench.plan.implied_epochs), or why it has none."""
    from bench import plan

    if rows is None:  # the default (no calibration given) is cached by bench.plan
        rows = plan.implied_epochs() if calibration is None else plan.implied_epochs(calibration=calibration)
    calibration = plan.printed_calibration() if calibration is None else calibration
    gpu = ", ".join(calibration.get("gpu") or calibration["hardware"])
    cells = set(calibration.get("cells", []))
    out = defaultdict(list)
    for r in rows:
        unit = r.get("unit", "s")
        printed = r["printed"] if any(ch.isalpha() for ch in r["printed"]) else f"{r['printed']} {unit}"
        if unit != "s":
            printed += f" ({r['printed_s']:,.0f} s)"
        if "skipped" in r:
            out[r["paper"]].append(f"IMPLIED {r['claim']}: printed {printed}: no implied epochs, {r['skipped']}")
            continue
        stages = r["stage_epochs"]
        configured = f"{r['epochs']:,} epochs" if len(stages) == 1 else \
            f"{r['epochs']:,} epochs ({_schedule(stages)}, all stages together)"
        where = (f"on the stated {gpu}" + (" (a calibration cell)" if r["claim"] in cells else "")
                 if r["hardware_stated"] else f"assuming a GPU like the calibration's {gpu} (the paper states none)")
        out[r["paper"]].append(
            f"IMPLIED {r['claim']}: printed {printed} implies {_epochs(r['implied'])} epochs (q1-q3 "
            f"{_epochs(r['implied_q1'])}-{_epochs(r['implied_q3'])}, extremes {_epochs(r['implied_min'])}-"
            f"{_epochs(r['implied_max'])}) of the configured {configured} of {r['experiment']} "
            f"({r['profile']} profile: {r['predicted_s']:,.0f} s at the median rate), {where}")
    return dict(out)


REAL_DATA_PROFILES = ("check", "scaled", "paper")  # smoke runs on synthetic stand-ins: no finding about a paper


def eq7_scaling() -> tuple[float, float]:
    """J of Eq. 7 as printed (a sum over anchors on raw features, bench.methods.si) on a fixed set of points whose
    positives are nearer than their negatives, at scale 1 and at scale 10 of the same points."""
    import torch

    from bench.methods.si import si_triplet_loss

    z = torch.tensor([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [3.5, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    return si_triplet_loss(z, labels).item(), si_triplet_loss(10.0 * z, labels).item()


def run_findings(results: Path | str = "results") -> dict[str, list[str]]:
    """paper -> findings about the paper from the suite's own runs: Karimi's Eq. 7 as printed is unbounded below
    (a property of the formula, computed), and whether its literal runs and the primary SI runs diverged on real
    data in the profiles whose result files are present (check, scaled, paper)."""
    from bench import experiments as ex
    from bench.aggregate import load_results

    one, ten = eq7_scaling()
    lines = [f"RUNS karimi Eq. 7: as printed (a sum over anchors of squared-distance differences on raw features) "
             f"it is unbounded below: scaling a layer's features by c scales J by c^2 (J = {one:g} on four points "
             f"whose positives are nearer than their negatives, {ten:g} on the same points times 10), so minimising "
             "it drives the feature norms to infinity; the suite judges the cells on the triplet-loss reading "
             "(bench/grids/karimi.yaml) and runs Eq. 7 as printed as the `-literal` companion"]
    for profile in REAL_DATA_PROFILES:
        runs = load_results(profile, ex.seeds(profile), results)
        mine = {k: r for k, r in runs.items() if k[0].startswith("karimi-") and ex.get(k[0]).method in
                ("si_forward", "fb_si")}
        literal = [r for (eid, _), r in mine.items() if ex.get(eid).variant == "literal"]
        primary = [r for (eid, _), r in mine.items() if ex.get(eid).variant == ""]
        if not literal and not primary:
            continue
        diverged = [r for r in literal if r.get("status") == "DIVERGED"]
        epochs = sorted(r.get("metrics", {}).get("diverged_epoch") or 0 for r in diverged)
        bad = sorted(f"{r['experiment']}/seed{r['seed']}" for r in primary if r.get("status") != "FINISHED")
        lines.append(
            f"RUNS karimi Eq. 7 on real data ({profile} profile, reports/{profile}/karimi.md): {len(diverged)} of "
            f"{len(literal)} runs of Eq. 7 as printed (`-literal`) DIVERGED"
            + (f" (at epoch {epochs[0]}-{epochs[-1]})" if epochs else "")
            + f"; {len(primary) - len(bad)} of {len(primary)} runs of the primary reading (SI forward and "
            "forward-backward) finished" + (f", not: {', '.join(bad)}" if bad else ", none diverged"))
    return {"karimi": lines}


def write_audit(path: Path | str = "reports/audit.md", found: dict[str, list[str]] | None = None,
                implied: dict[str, list[str]] | None = None, calibration: dict | None = None,
                runs: dict[str, list[str]] | None = None) -> Path:
    """`implied`: the implied-epochs lines per paper (default: implied_epochs_findings(), which counts the models'
    MACs the first time: cached on disk by bench.plan); `calibration`: the printed calibration they were read at."""
    found = findings() if found is None else found
    runs = run_findings() if runs is None else runs
    found = {paper: items + runs.get(paper, []) for paper, items in found.items()}
    if implied is None:
        implied = implied_epochs_findings(calibration=calibration)
    if calibration is None:
        from bench import plan

        calibration = plan.printed_calibration()
    headline = headline_checks(load_claims())
    meta = papers()
    total = sum(len(v) for v in found.values())
    lines = ["# Audit of the papers' printed numbers", "",
             "Computed by `bench audit` from the claims registry alone (no training): every derived cell recomputed "
             "from the cells it derives from, allowing for the rounding of each printed number; the averages the "
             "text states; configurations printed twice; impossible or suspicious prints (a seconds field of 60 or "
             "more, accuracies at chance level, identical columns); and every headline claim of the paper "
             "(`bench/claims/headlines.yaml`) applied to the printed numbers: a claim that does not hold as printed "
             "is a finding. Each finding names the registry rows (`bench/claims/<paper>.csv`, column `id`). "
             "Findings marked RUNS come from the suite itself: a property of a printed formula computed with the "
             "suite's implementation of it, and what the runs of the real-data profiles (check, scaled, paper) "
             "whose result files are present showed.", "",
             "Implied epochs: every printed training time read backwards through `bench plan`'s cost model "
             "(bench.plan.implied_epochs): the configured schedule of the cell's experiment in the `paper` profile, "
             f"its seconds at the median rate of the printed calibration ({calibration['rate']:.3g} forward-MAC "
             f"units/s; quartiles {calibration['rate_q1']:.3g}-{calibration['rate_q3']:.3g}, extremes "
             f"{calibration['rate_min']:.3g}-{calibration['rate_max']:.3g}; fitted on {len(calibration['cells'])} "
             f"backprop times printed for {', '.join(calibration.get('gpu') or calibration['hardware'])}), and the "
             "epochs that would fill the printed time: configured epochs x printed / predicted seconds, at the "
             "quartile rates (a faster GPU, more epochs) and the extremes. A staged method's epochs are all its "
             "stages' epochs together. For a paper that does not state its GPU the figures assume one like the "
             "calibration's. Small models run far below the median rate (per-sample costs that do not scale with "
             "MACs), so their implied epochs overstate; Learn & Drop and Freezing are counted without drops (a run "
             "decides them), an upper bound on their cost, so theirs understate.", "",
             f"{total} findings. {sum(len(v) for v in implied.values())} printed training times with their implied "
             "epochs.", ""]
    for paper, items in found.items():
        lines += [f"## {paper}: {meta[paper]['citation'] if paper in meta else ''}", ""]
        lines += [f"- {item}" for item in items] or ["- no finding"]
        checks = headline.get(paper, [])
        if checks:
            held = sum(ok for ok, _ in checks)
            lines += ["", f"Headline claims, holds as printed? {held} of {len(checks)}:", ""]
            lines += [f"- {'yes' if ok else 'NO'}: {line}" for ok, line in checks]
        times = implied.get(paper, [])
        if times:
            lines += ["", f"Implied epochs of the {len(times)} printed training times:", ""]
            lines += [f"- {line}" for line in times]
        lines.append("")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
