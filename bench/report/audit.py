"""`bench audit`: reports/audit.md, the papers' printed numbers checked against each other (bench/claims/audit.py),
with two more kinds of lines per paper:
* the epochs every printed training time implies (bench.cost.plan.implied_epochs): the cell's configured schedule read
  through `bench plan`'s cost model at the rate calibrated on the printed times of the paper that states its GPU,
  one line per time (its own section of each paper, beside the findings);
* RUNS: what the suite's own runs say about a paper (Karimi's Eq. 7 as printed is unbounded below, computed with the
  suite's loss; whether its literal and primary SI runs diverged in the real-data profiles whose result files are
  present).
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

from bench.claims.audit import findings, headline_checks
from bench.claims.registry import load_claims, papers


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
    calibration's median rate and quartile rates (bench.cost.plan.implied_epochs), or why it has none."""
    from bench.cost import plan

    if rows is None:  # the default (no calibration given) is cached by bench.cost.plan
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
        configured = (
            f"{r['epochs']:,} epochs"
            if len(stages) == 1
            else f"{r['epochs']:,} epochs ({_schedule(stages)}, all stages together)"
        )
        where = (
            f"on the stated {gpu}" + (" (a calibration cell)" if r["claim"] in cells else "")
            if r["hardware_stated"]
            else f"assuming a GPU like the calibration's {gpu} (the paper states none)"
        )
        out[r["paper"]].append(
            f"IMPLIED {r['claim']}: printed {printed} implies {_epochs(r['implied'])} epochs (q1-q3 "
            f"{_epochs(r['implied_q1'])}-{_epochs(r['implied_q3'])}, extremes {_epochs(r['implied_min'])}-"
            f"{_epochs(r['implied_max'])}) of the configured {configured} of {r['experiment']} "
            f"({r['profile']} profile: {r['predicted_s']:,.0f} s at the median rate), {where}"
        )
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
    from bench.run.results import load_results

    one, ten = eq7_scaling()
    lines = [
        f"RUNS karimi Eq. 7: as printed (a sum over anchors of squared-distance differences on raw features) "
        f"it is unbounded below: scaling a layer's features by c scales J by c^2 (J = {one:g} on four points "
        f"whose positives are nearer than their negatives, {ten:g} on the same points times 10), so minimising "
        "it drives the feature norms to infinity; the suite judges the cells on the triplet-loss reading "
        "(bench/grids/karimi.yaml) and runs Eq. 7 as printed as the `-literal` companion"
    ]
    for profile in REAL_DATA_PROFILES:
        runs = load_results(profile, ex.seeds(profile), results)
        mine = {
            k: r
            for k, r in runs.items()
            if k[0].startswith("karimi-") and ex.get(k[0]).method in ("si_forward", "fb_si")
        }
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
            "forward-backward) finished" + (f", not: {', '.join(bad)}" if bad else ", none diverged")
        )
    return {"karimi": lines}


def augmented(claim) -> bool | None:
    """Whether the run behind a cell sees augmented images, by its paper's grid (None: no run, or no grid)."""
    from bench import BenchError
    from bench import experiments as ex

    key = claim.experiment_key()
    if not key:
        return None
    try:
        aug = ex.paper_config(ex.Experiment(*key))[0].get("augment") or {}
    except BenchError:
        return None
    return bool(aug.get("crop_padding") or aug.get("hflip"))


def result_counts(results: Path | str) -> dict[str, int]:
    """Result files per real-data profile under `results` (what the audit's RUNS findings were read from)."""
    return {p: len(list((Path(results) / p / "runs").glob("*/seed*.json"))) for p in ("check", "scaled", "paper")}


def audit_path(out: Path, total: int, replace: bool) -> Path:
    """`out`, unless the audit already there has more findings (its RUNS findings read result files this run does
    not have): then <out stem>.partial.md beside it, said on stderr; `replace` writes over it anyway."""
    if replace or not out.exists():
        return out
    m = re.search(r"^(\d+) findings\.", out.read_text(encoding="utf-8", errors="replace"), re.M)
    if m and int(m.group(1)) <= total:
        return out
    beside = out.with_name(out.stem + ".partial.md")
    print(
        f"bench audit: {out} has {m.group(1) if m else 'an unreadable number of'} findings, this run {total} (the "
        f"result files its RUNS findings read are absent here): wrote {beside} instead; --replace writes over it",
        file=sys.stderr,
    )
    return beside


def write_audit(
    path: Path | str = "reports/audit.md",
    found: dict[str, list[str]] | None = None,
    implied: dict[str, list[str]] | None = None,
    calibration: dict | None = None,
    runs: dict[str, list[str]] | None = None,
    results: Path | str | None = None,
    replace: bool = True,
) -> Path:
    """`implied`: the implied-epochs lines per paper (default: implied_epochs_findings(), which counts the models'
    MACs the first time: cached on disk by bench.plan); `calibration`: the printed calibration they were read at."""
    found = findings(augmented=augmented) if found is None else found
    runs = run_findings() if runs is None else runs
    found = {paper: items + runs.get(paper, []) for paper, items in found.items()}
    if implied is None:
        implied = implied_epochs_findings(calibration=calibration)
    if calibration is None:
        from bench.cost import plan

        calibration = plan.printed_calibration()
    headline = headline_checks(load_claims())
    meta = papers()
    total = sum(len(v) for v in found.values())
    path = audit_path(Path(path), total, replace)
    counts = result_counts(results) if results is not None else {}
    source = (
        "Generated from the registry and the result files of the real-data profiles under "
        f"`{Path(results).as_posix()}/` ({', '.join(f'{p}: {n:,}' for p, n in counts.items())})."
        if results is not None
        else "Generated from the registry (and the RUNS findings given)."
    )
    lines = [
        "# Audit of the papers' printed numbers",
        "",
        "Computed by `bench audit` from the claims registry alone (no training): every derived cell recomputed "
        "from the cells it derives from, allowing for the rounding of each printed number; the averages the "
        "text states; configurations printed twice; impossible or suspicious prints (a seconds field of 60 or "
        "more, accuracies at chance level, identical columns); and every headline claim of the paper "
        "(`bench/claims/headlines.yaml`) applied to the printed numbers: a claim that does not hold as printed "
        "is a finding. Each finding names the registry rows (`bench/claims/<paper>.csv`, column `id`). "
        "Findings marked RUNS come from the suite itself: a property of a printed formula computed with the "
        "suite's implementation of it, and what the runs of the real-data profiles (check, scaled, paper) "
        "whose result files are present showed.",
        "",
        "Implied epochs: every printed training time read backwards through `bench plan`'s cost model "
        "(bench.cost.plan.implied_epochs): the configured schedule of the cell's experiment in the `paper` profile, "
        f"its seconds at the median rate of the printed calibration ({calibration['rate']:.3g} forward-MAC "
        f"units/s; quartiles {calibration['rate_q1']:.3g}-{calibration['rate_q3']:.3g}, extremes "
        f"{calibration['rate_min']:.3g}-{calibration['rate_max']:.3g}; fitted on {len(calibration['cells'])} "
        f"backprop times printed for {', '.join(calibration.get('gpu') or calibration['hardware'])}), and the "
        "epochs that would fill the printed time: configured epochs x printed / predicted seconds, at the "
        "quartile rates (a faster GPU, more epochs) and the extremes. A staged method's epochs are all its "
        "stages' epochs together. For a paper that does not state its GPU the figures assume one like the "
        "calibration's. Small models run far below the median rate (per-sample costs that do not scale with "
        "MACs), so their implied epochs overstate; Learn & Drop and Freezing are counted without drops (a run "
        "decides them), an upper bound on their cost, so theirs understate.",
        "",
        f"{total} findings. {sum(len(v) for v in implied.values())} printed training times with their implied epochs.",
        "",
        source,
        "",
    ]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def run_audit(out: Path | str = "reports/audit.md", results: Path | str = "results", replace: bool = False) -> Path:
    """`bench audit`: every finding on stdout as "<paper>: <finding>" (the printed numbers', the runs', the implied
    epochs'), reports/audit.md written, and the counts on stderr."""
    found = findings(augmented=augmented)
    runs = run_findings(results)
    implied = implied_epochs_findings()
    for paper, items in found.items():
        for item in items + runs.get(paper, []) + implied.get(paper, []):
            print(f"{paper}: {item}")
    path = write_audit(out, found, implied, runs=runs, results=results, replace=replace)
    print(
        f"{sum(len(v) for v in found.values())} findings, {sum(len(v) for v in implied.values())} printed "
        f"training times with their implied epochs -> {path}",
        file=sys.stderr,
    )
    return path
