"""Statistics, aggregation of result files into cells, and the Markdown reports, on hand-made result files."""

import csv
import math

import pytest
from helpers import measurement_file, result_file

from bench import experiments as ex
from bench.claims.registry import Claim, load_claims
from bench.report import pages
from bench.report.pages import SMOKE_WARNING, write_reports
from bench.run.results import run_path, write_json_atomic
from bench.verdicts import aggregate as agg
from bench.verdicts.stats import summarize

T975_DF2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (statistical tables)


def test_summarize_by_hand():
    s = summarize([90.0, 91.0, 92.0])
    assert (s["n"], s["mean"], s["sd"]) == (3, 91.0, 1.0)
    assert s["ci_low"] == pytest.approx(91 - T975_DF2 / math.sqrt(3))
    assert s["ci_high"] == pytest.approx(91 + T975_DF2 / math.sqrt(3))
    one = summarize([5.0])
    assert one["mean"] == 5.0 and math.isnan(one["sd"]) and math.isnan(one["ci_low"])
    assert summarize([])["n"] == 0


def fake_run(
    results,
    profile,
    experiment,
    seed,
    accuracy=50.0,
    train_time_s=600.0,
    memory_mb=1000.0,
    status="FINISHED",
    error=None,
):
    result = result_file(
        profile,
        experiment,
        seed,
        status,
        finished=f"2026-01-0{seed + 1}T00:00:00+00:00",
        metrics={"test_accuracy": accuracy, "train_time_s": train_time_s, "peak_memory_mb": memory_mb},
    )
    if error:
        result["error"] = error
    write_json_atomic(run_path(profile, experiment, seed, results), result)


def diverged_then_failed(results, experiment):
    """Seed 0 DIVERGED, seed 1 FAILED: a mix that is not only divergence."""
    fake_run(results, "paper", experiment, 0, status="DIVERGED", error="diverged at epoch 1: x")
    fake_run(results, "paper", experiment, 1, status="FAILED", error="RuntimeError: boom")


def cells_by_id(results, profile, seeds):
    path = agg.aggregate(profile, results=results, seeds=seeds)
    with open(path, newline="", encoding="utf-8") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def test_metric_values_in_the_claims_units():
    result = {"metrics": {"test_accuracy": 92.5, "train_time_s": 1200.0, "peak_memory_mb": 2048.0}}
    base = {"metrics": {"train_time_s": 3000.0}}

    def claim(metric, unit):
        return Claim(
            "x", "p", "1", "r", "c", "cifar10", "m", "backprop", "", "", metric, "1", 1.0, unit, "backprop", "", ""
        )

    assert agg.metric_value(claim("test_accuracy", "%"), result) == 92.5
    assert agg.metric_value(claim("test_error", "%"), result) == pytest.approx(7.5)
    assert agg.metric_value(claim("train_time", "min"), result) == 20.0
    assert agg.metric_value(claim("train_time", "s"), result) == 1200.0
    assert agg.metric_value(claim("memory", "GB"), result) == 2.0
    notebook = {
        "metrics": {"peak_memory_mb": 2048.0, "host_rss_after_mb": 5000.0},
        "config": {"memory_metric": "host_rss_after_mb"},
    }  # Bhyravabhottla & Lee: psutil RSS after fit
    assert agg.metric_value(claim("memory", "MB"), notebook) == 5000.0
    from bench import experiments as ex

    cfg = ex.config(ex.Experiment("bhyravabhottla", "cifar100", "cnn12", "layer_to_layer"), "paper")
    assert cfg["memory_metric"] == "host_rss_after_mb" and "psutil" in cfg["sources"]["memory_metric"]
    assert agg.metric_value(claim("time_saving_pct", "%"), result, base) == pytest.approx(60.0)


def test_aggregate_cells_from_result_files(tmp_path):
    res = tmp_path / "results"
    for seed, acc in enumerate([90.0, 91.0, 92.0]):
        fake_run(res, "paper", "cruciata-mnist-vgg11-backprop", seed, accuracy=acc, train_time_s=600.0)
    for seed in (0, 1):  # one seed missing
        fake_run(res, "paper", "ma-cifar10-vgg8-backprop", seed, accuracy=80.0 + seed)
    fake_run(res, "paper", "ma-cifar100-vgg8-backprop", 0, status="FAILED", error="RuntimeError: out of memory")
    cells = cells_by_id(res, "paper", "0,1,2")

    acc = cells["cruciata.1.vgg-11.mnist.sgd.a"]
    assert acc["status"] == "MEASURED" and acc["n"] == "3" and float(acc["mean"]) == 91.0 and float(acc["sd"]) == 1.0
    assert float(acc["ci_high"]) == pytest.approx(91 + T975_DF2 / math.sqrt(3), rel=1e-5)
    assert float(acc["diff"]) == pytest.approx(91.0 - 98.64)
    assert acc["sources"].split() == [f"run-cruciata-mnist-vgg11-backprop-{s}" for s in range(3)]
    assert float(cells["cruciata.1.vgg-11.mnist.sgd.t"]["mean"]) == 10.0  # 600 s in the paper's minutes

    partial = cells["ma.I.vgg8.global"]
    assert partial["status"] == "PARTIAL" and partial["n"] == "2" and "1 of 3 seeds" in partial["reason"]
    failed = cells["ma.II.vgg8.global"]
    assert failed["status"] == "FAILED" and "out of memory" in failed["reason"]
    missing = cells["ma.I.vgg8.layer-wise"]
    assert missing["status"] == "MISSING" and "3 of 3 seeds have no result file" in missing["reason"]
    assert missing["mean"] == ""

    assert cells["cruciata.3.vgg-11.sgd.flops"]["status"] == "MISSING"
    assert len(cells) == len(load_claims())  # no cell is dropped


# the (dataset, model) runs Cruciata's averaged rows take
CRUCIATA_AVERAGE_ROWS = [
    ("mnist", "vgg11"),
    ("cifar10", "vgg11"),
    ("imagenette", "vgg11"),
    ("mnist", "vgg16"),
    ("cifar10", "vgg16"),
    ("imagenette", "vgg16"),
    ("mnist", "vgg19"),
    ("cifar10", "vgg19"),
    ("imagenette", "vgg19"),
]


def cruciata_runs(res, learn_drop):
    """Seeds 0 and 1 of backprop (1000 s) and Learn & Drop (fake_run's keywords learn_drop(i, seed)) on every
    (dataset, model) of Cruciata's averaged rows, the i-th in CRUCIATA_AVERAGE_ROWS' order."""
    for i, (dataset, model) in enumerate(CRUCIATA_AVERAGE_ROWS):
        for seed in (0, 1):
            fake_run(res, "paper", f"cruciata-{dataset}-{model}-backprop", seed, train_time_s=1000.0)
            fake_run(res, "paper", f"cruciata-{dataset}-{model}-learn_drop", seed, **learn_drop(i, seed))


def test_time_savings_and_text_averages_are_computed_per_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(agg, "support", lambda exp, profile: "")  # pretend Learn & Drop is implemented
    res = tmp_path / "results"
    # savings 40 + i (seed 0) and 60 + i (seed 1)
    cruciata_runs(res, lambda i, seed: {"train_time_s": 1000.0 - 10 * (40 + i + 20 * seed)})
    cells = cells_by_id(res, "paper", "0,1")
    first = cells["cruciata.1.vgg-11.mnist.dropping.dt"]
    assert float(first["mean"]) == pytest.approx(50.0) and float(first["sd"]) == pytest.approx(math.sqrt(200))
    avg = cells["cruciata.text.vgg-average.dropping.dt"]
    # per seed: mean over the 9 rows = 44 and 64; over seeds: 54
    assert avg["status"] == "MEASURED" and float(avg["mean"]) == pytest.approx(54.0)
    assert float(avg["sd"]) == pytest.approx(math.sqrt(200))
    assert cells["cruciata.text.resnet-average.dropping.dt"]["status"] == "MISSING"


def test_reports_render_the_papers_tables(tmp_path):
    res, rep = tmp_path / "results", tmp_path / "reports"
    for seed, acc in enumerate([90.0, 91.0, 92.0]):
        fake_run(res, "paper", "ma-cifar10-vgg8-backprop", seed, accuracy=acc)
    agg.aggregate("paper", results=res, seeds="0,1,2")
    written = write_reports("paper", results=res, reports=rep)
    assert {p.name for p in written} >= {"index.md", "ma.md", "karimi.md", "bhyravabhottla.md", "cruciata.md"}
    ma = (rep / "paper" / "ma.md").read_text()
    assert not ma.startswith(SMOKE_WARNING)
    assert "`paper`" in ma and "TestGPU 9000" in ma and "abc123" in ma  # profile, hardware, code version
    assert "## Table I: Classification verification with VGGs on CIFAR10" in ma
    row = next(line for line in ma.splitlines() if line.startswith("| VGG8 "))
    assert "90.59 → 91.00 ± 1.00" in row and "89.72 → MISSING [1]" in row
    assert "[1] 3 of 3 seeds have no result file yet" in ma
    assert (rep / "paper" / "figures" / "ma_claimed_vs_reproduced.png").stat().st_size > 1000
    index = (rep / "paper" / "index.md").read_text()
    row = next(line for line in index.splitlines() if line.startswith("| [ma](ma.md)"))
    assert row.split("|")[2].strip() == "122"


def test_a_restricted_run_says_so_counts_each_papers_runs_and_drops_unlinked_figures(tmp_path):
    res, rep = tmp_path / "results", tmp_path / "reports"
    stale = rep / "paper" / "figures" / "ma_old_figure.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"png")
    for seed in range(3):
        fake_run(res, "paper", "ma-cifar10-vgg8-backprop", seed, accuracy=90.0 + seed)
    agg.aggregate("paper", results=res, seeds="0,1,2")
    write_reports("paper", results=res, reports=rep, only="ma-cifar10-vgg8-*")
    for name in ("index.md", "ma.md", "karimi.md"):
        text = (rep / "paper" / name).read_text()
        assert "- **Restricted run:** `only=ma-cifar10-vgg8-*`: 3 of the profile's" in text, name  # + sequential
    assert "runs found: 3" in (rep / "paper" / "ma.md").read_text()
    assert "runs found: 0" in (rep / "paper" / "karimi.md").read_text()  # another paper's runs are not its own
    index = (rep / "paper" / "index.md").read_text()
    assert "runs found: 3" in index
    karimi_row = next(line for line in index.splitlines() if line.startswith("| [karimi](karimi.md)"))
    assert "0 / 9, 9 without runs" in karimi_row  # untested claims are not 'not held'
    assert not stale.exists() and (rep / "paper" / "figures" / "ma_claimed_vs_reproduced.png").exists()
    write_reports("paper", results=res, reports=rep)
    assert "Restricted run" not in (rep / "paper" / "ma.md").read_text()


def test_smoke_reports_say_so_in_their_first_line(tmp_path):
    res, rep = tmp_path / "results", tmp_path / "reports"
    fake_run(res, "smoke", "ma-cifar10-vgg8-backprop", 0, accuracy=12.0)
    agg.aggregate("smoke", results=res)
    write_reports("smoke", results=res, reports=rep)
    for name in ("index.md", "ma.md", "cruciata.md"):
        first = (rep / "smoke" / name).read_text().splitlines()[0]
        assert first == SMOKE_WARNING and "say nothing about the papers" in first


def test_a_bf16_run_is_flagged_as_a_deviation_in_the_report(tmp_path):
    import json

    res, rep = tmp_path / "results", tmp_path / "reports"
    for seed in range(3):
        fake_run(res, "paper", "cruciata-mnist-vgg11-backprop", seed, accuracy=98.6 + 0.05 * seed)
    path = run_path("paper", "cruciata-mnist-vgg11-backprop", 1, res)
    result = json.loads(path.read_text())
    result["environment"]["precision"] = "bf16"
    write_json_atomic(path, result)
    agg.aggregate("paper", results=res)
    write_reports("paper", results=res, reports=rep)
    text = (rep / "paper" / "cruciata.md").read_text()
    assert "bf16 (1 runs)" in text and "bf16 autocast is a deviation from the papers" in text
    assert "not recorded (2 runs)" in text  # the other two result files do not say


def test_report_without_aggregate_is_a_clear_error(tmp_path):
    from bench import BenchError

    with pytest.raises(BenchError, match="nothing: no such folder"):
        write_reports("paper", results=tmp_path / "nothing", reports=tmp_path / "r")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(BenchError, match="run `bench aggregate --profile paper` first"):
        write_reports("paper", results=tmp_path / "nothing", reports=tmp_path / "r")
    assert ex.seeds("smoke") == [0]


def test_companion_runs_are_reported_beside_the_cells(tmp_path):
    res, rep = tmp_path / "results", tmp_path / "reports"
    for seed, acc in enumerate([70.0, 72.0]):
        fake_run(
            res, "paper", "bhyravabhottla-cifar10-cnn12-backprop-equal_epochs", seed, accuracy=acc, train_time_s=100.0
        )
    agg.aggregate("paper", results=res, seeds="0,1")
    rows = {r["experiment"]: r for r in csv.DictReader(open(res / "paper" / "companions.csv"))}
    row = rows["bhyravabhottla-cifar10-cnn12-backprop-equal_epochs"]
    assert row["beside"] == "bhyravabhottla-cifar10-cnn12-layer_to_layer" and row["status"] == "MEASURED"
    assert float(row["test_accuracy"]) == 71.0 and row["n"] == "2" and "as many epochs" in row["why"]
    assert rows["bhyravabhottla-cifar10-vgg16-backprop"]["status"] == "MISSING"
    write_reports("paper", results=res, reports=rep)
    text = (rep / "paper" / "bhyravabhottla.md").read_text()
    assert "## Companion runs (no cell of the paper)" in text
    line = next(row for row in text.splitlines() if "cifar10-cnn12-backprop-equal_epochs" in row)
    assert "71.00 ± 1.41" in line and "MEASURED" in line and "method=backprop + variant=equal_epochs [choice]" in line
    assert "equal_epochs" not in (rep / "paper" / "cruciata.md").read_text()  # each paper lists its own companions


def test_training_time_as_each_paper_times_it():
    epochs = [{"epoch_time_s": 10.0, "eval_time_s": 1.0}, {"epoch_time_s": 12.0, "eval_time_s": 1.5}]
    plain = {"metrics": {"train_time_s": 22.0}, "epochs": epochs, "config": {}}
    assert agg.training_seconds(plain) == 22.0
    keras_fit = {**plain, "config": {"timing": "fit_with_validation"}}  # Keras fit evaluates its validation data
    assert agg.training_seconds(keras_fit) == 24.5
    staged = {**keras_fit, "metrics": {"train_time_s": 22.0, "staged_wall_time_s": 30.0}}
    assert agg.training_seconds(staged) == 30.0
    assert ex.config(ex.get("bhyravabhottla-cifar100-cnn12-backprop"), "paper")["timing"] == "fit_with_validation"
    assert "timing" not in ex.config(ex.get("cruciata-cifar10-vgg16-backprop"), "paper")


def test_diverged_runs_are_a_result_with_their_own_status(tmp_path):
    res = tmp_path / "results"
    for seed in range(3):
        fake_run(
            res,
            "paper",
            "karimi-cifar10-lenet-si_forward",
            seed,
            status="DIVERGED",
            error="diverged at epoch 3: train_loss is nan",
        )
    diverged_then_failed(res, "karimi-cifar10-alexnet-si_forward")
    cells = cells_by_id(res, "paper", "0,1,2")
    lenet = next(r for r in cells.values() if r["experiment"] == "karimi-cifar10-lenet-si_forward")
    assert lenet["status"] == "DIVERGED" and "diverged at epoch 3" in lenet["reason"]
    assert lenet["sources"].split() == [f"run-karimi-cifar10-lenet-si_forward-{s}" for s in range(3)]
    alexnet = next(r for r in cells.values() if r["experiment"] == "karimi-cifar10-alexnet-si_forward")
    assert alexnet["status"] == "FAILED" and "boom" in alexnet["reason"]


def test_learn_drop_flops_come_from_its_runs_against_sgd(tmp_path):
    """Table 3's Dropping FLOPs and their reduction: mean per-epoch forward MACs of the run over the SGD run's."""
    res = tmp_path / "results"
    for seed, head in ((0, [100.0, 100.0, 60.0, 60.0]), (1, [100.0, 50.0, 50.0, 50.0])):
        for method, epochs in (("learn_drop", head), ("freezing", [100.0] * 4), ("backprop", None)):
            eid = f"cruciata-imagenette-vgg11-{method}"
            fake_run(res, "paper", eid, seed, train_time_s=100.0)
            path = run_path("paper", eid, seed, res)
            result = __import__("json").loads(path.read_text())
            result["metrics"]["macs_forward"] = 100.0
            result["epochs"] = [
                {"epoch": i + 1, "epoch_time_s": 25.0, **({"macs_epoch": m} if epochs else {})}
                for i, m in enumerate(epochs or [0] * 4)
            ]
            write_json_atomic(path, result)
    measure = res / "paper" / "models" / "cruciata-vgg11.json"
    write_json_atomic(measure, measurement_file("cruciata", "vgg11", macs=30_000_000_000, params_total=1))
    cells = cells_by_id(res, "paper", "0,1")
    # seed 0: mean 80 -> 20 % less; seed 1: mean 62.5 -> 37.5 % less
    cut = cells["cruciata.3.vgg-11.dropping.d-flops-pct"]
    assert cut["status"] == "MEASURED" and float(cut["mean"]) == pytest.approx(28.75)
    flops = cells["cruciata.3.vgg-11.dropping.flops"]
    assert float(flops["mean"]) == pytest.approx(30_000 * (0.8 + 0.625) / 2)
    assert "run-cruciata-imagenette-vgg11-learn_drop-0" in flops["sources"]
    rep = tmp_path / "reports"
    write_reports("paper", results=res, reports=rep)
    figure = rep / "paper" / "figures" / "cruciata_imagenette_per_epoch.png"
    assert (
        figure.stat().st_size > 1000
        and "cruciata_imagenette_per_epoch.png" in (rep / "paper" / "cruciata.md").read_text()
    )


def test_per_epoch_figures_start_at_zero_in_plain_numbers(tmp_path, monkeypatch):
    """A 2 % drop of forward MACs (35.0M -> 34.3M) on an axis from 0 with ticks such as 30M, not on one cut just
    below the curves under a '1e7' offset, where it looked like a cliff."""
    from bench.report import figures

    res = tmp_path / "results"
    for method, macs in (("learn_drop", [35e6, 35e6, 34.3e6, 34.3e6]), ("freezing", [35e6] * 4), ("backprop", None)):
        eid = f"cruciata-imagenette-vgg11-{method}"
        fake_run(res, "paper", eid, 0)
        path = run_path("paper", eid, 0, res)
        result = __import__("json").loads(path.read_text())
        result["metrics"]["macs_forward"] = 35e6
        result["epochs"] = [
            {"epoch": i + 1, "epoch_time_s": 25.0 - i / 10, **({"macs_epoch": m} if macs else {})}
            for i, m in enumerate(macs or [0] * 4)
        ]
        write_json_atomic(path, result)
    shown = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: (fig.canvas.draw(), shown.append(fig)))
    assert figures.epoch_figures("cruciata", res, "paper", [0], tmp_path)
    axes = [ax for fig in shown for ax in fig.axes]
    assert axes and all(ax.get_ylim()[0] == 0 for ax in axes), [ax.get_ylim() for ax in axes]
    assert all(ax.yaxis.get_offset_text().get_text() == "" for ax in axes)
    macs_ticks = [t.get_text() for t in axes[1].get_yticklabels()]
    assert "30M" in macs_ticks, macs_ticks


def test_verdicts_and_headline_claims_reach_the_reports_byte_stable(tmp_path):
    """A paper-profile run set: verdicts in cells.csv, headline claims in headlines.csv, a summary first in the
    paper's report, and the same inputs give the same bytes (Markdown and PNG)."""
    res, rep = tmp_path / "results", tmp_path / "reports"
    for seed, (sgd, freeze) in enumerate([(98.6, 98.3), (98.7, 98.2), (98.65, 98.25)]):
        fake_run(res, "paper", "cruciata-mnist-vgg11-backprop", seed, accuracy=sgd, train_time_s=1200.0)
        fake_run(res, "paper", "cruciata-mnist-vgg11-freezing", seed, accuracy=freeze, train_time_s=600.0 + 10 * seed)
    cells = cells_by_id(res, "paper", "0,1,2")
    sgd = cells["cruciata.1.vgg-11.mnist.sgd.a"]  # printed 98.64; reproduced 98.65 +- 0.05
    # band: at most half the printed 1.36 % error, plus half a unit of the printed last digit
    assert sgd["verdict"] == "REPRODUCED" and sgd["ci_method"] == "t"
    assert (float(sgd["band_low"]), float(sgd["band_high"])) == pytest.approx((98.64 - 0.685, 98.64 + 0.685))
    assert float(sgd["p_adjusted"]) <= 0.05 and float(sgd["p_equivalence"]) <= float(sgd["p_adjusted"])
    assert sgd["correction"] == "bh"
    time = cells["cruciata.1.vgg-11.mnist.sgd.t"]
    assert time["verdict"] == "NOT COMPARABLE" and "TestGPU 9000" in time["reason"]  # not the paper's RTX 3090
    assert cells["ma.I.vgg8.global"]["verdict"] == "MISSING"
    saving = cells["cruciata.1.vgg-11.mnist.freezing.dt"]  # about 49 %, printed 6.00: far beyond its band
    assert float(saving["mean"]) == pytest.approx(100 * (1 - 610 / 1200)) and saving["verdict"] == "BETTER"
    with open(res / "paper" / "headlines.csv", newline="", encoding="utf-8") as f:
        heads = {r["id"]: r for r in csv.DictReader(f)}
    assert heads["cruciata.h1"]["verdict"] == "MISSING" and heads["cruciata.h1"]["as_printed"] == "yes"
    assert heads["cruciata.h7"]["as_printed"] == "no"
    first = {p.name: p.read_bytes() for p in write_reports("paper", results=res, reports=rep) if p.is_file()}
    again = {p.name: p.read_bytes() for p in write_reports("paper", results=res, reports=rep) if p.is_file()}
    assert first == again and "cruciata_claimed_vs_reproduced.png" in first
    text = (rep / "paper" / "cruciata.md").read_text()
    assert (
        text.index("## Summary")
        < text.index("## Table 1")
        < text.index("## Headline claims")
        < text.index("## Choices made where the paper is silent")
    )
    assert "98.64 → 98.65 ± 0.05 (n=3) **REP**" in text
    assert "RTX 3090" in text and "single values, no spread" in text
    index = (rep / "paper" / "index.md").read_text()
    row = next(line for line in index.splitlines() if line.startswith("| [cruciata]"))
    assert row.split("|")[4].strip() == "2"  # reproduced: SGD and Freezing accuracy on VGG-11/MNIST


def test_a_diverged_companion_says_so(tmp_path):
    res = tmp_path / "results"
    for seed in range(2):
        fake_run(
            res,
            "paper",
            "karimi-cifar10-lenet-si_forward-literal",
            seed,
            status="DIVERGED",
            error="diverged at epoch 1: feature_norm inf",
        )
    diverged_then_failed(res, "karimi-cifar10-vgg16-si_forward-literal")
    agg.aggregate("paper", results=res, seeds="0,1")
    rows = {r["experiment"]: r for r in csv.DictReader(open(res / "paper" / "companions.csv"))}
    assert rows["karimi-cifar10-lenet-si_forward-literal"]["status"] == "DIVERGED"
    assert rows["karimi-cifar10-vgg16-si_forward-literal"]["status"] == "FAILED"  # not only divergence
    assert rows["karimi-cifar10-alexnet-si_forward-literal"]["status"] == "MISSING"


def test_a_run_never_replaces_a_fuller_report(tmp_path, capsys):
    """Issue 31: a restricted or partial run's report goes beside a fuller one (more result files or cells with a
    value), said on stderr; --replace writes over it; aggregate with no result files is an error, not an empty
    cells.csv."""
    from bench import BenchError

    res, rep = tmp_path / "results", tmp_path / "reports"
    for seed in range(3):
        fake_run(res, "paper", "ma-cifar10-vgg8-backprop", seed, accuracy=90.0 + seed)
    agg.aggregate("paper", results=res, seeds="0,1,2")
    write_reports("paper", results=res, reports=rep)
    full = {p: p.read_bytes() for p in (rep / "paper").rglob("*") if p.is_file()}
    assert pages.fullness(rep / "paper" / "index.md") == (3, 1)

    partial = tmp_path / "partial"
    fake_run(partial, "paper", "ma-cifar10-vgg8-backprop", 0, accuracy=91.0)
    agg.aggregate("paper", results=partial, seeds="0,1,2")
    capsys.readouterr()
    written = write_reports("paper", results=partial, reports=rep, only="ma-cifar10-vgg8-*")
    err = capsys.readouterr().err
    assert "holds a fuller report (3 result files, 1 cells with a value) than this run (1 result files" in err
    beside = written[0].parent
    assert beside.parent == rep / "paper" and beside.name.startswith("partial-") and (beside / "ma.md").exists()
    assert "[audit.md](../../audit.md)" in (beside / "index.md").read_text()
    assert {p: p.read_bytes() for p in (rep / "paper").rglob("*") if p.is_file() and beside not in p.parents} == full
    write_reports("paper", results=partial, reports=rep, replace=True)
    assert pages.fullness(rep / "paper" / "index.md") == (1, 1)

    with pytest.raises(BenchError, match="empty: no such folder"):
        agg.aggregate("paper", results=tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no result files .* nothing to aggregate"):
        agg.aggregate("paper", results=tmp_path / "empty")
    assert not (tmp_path / "empty" / "paper" / "cells.csv").exists()


def test_the_audit_keeps_the_findings_of_absent_result_files(tmp_path, capsys):
    from bench.report import audit as report_audit

    out = tmp_path / "audit.md"
    runs = {"karimi": ["RUNS karimi Eq. 7 on real data: 6 of 6 runs DIVERGED"]}
    cal = {"rate": 1.0, "rate_q1": 1.0, "rate_q3": 1.0, "rate_min": 1.0, "rate_max": 1.0, "cells": [], "hardware": []}
    quick = {"implied": {}, "calibration": cal}  # the implied epochs are another test's (test_implied_epochs)
    report_audit.write_audit(out, runs=runs, results=tmp_path / "res", **quick)
    fuller = out.read_text()
    assert "result files of the real-data profiles under" in fuller and "check: 0, scaled: 0, paper: 0" in fuller
    path = report_audit.write_audit(out, runs={}, results=tmp_path / "res", replace=False, **quick)
    assert path == tmp_path / "audit.partial.md" and out.read_text() == fuller
    assert "wrote" in capsys.readouterr().err
    assert report_audit.write_audit(out, runs={}, results=tmp_path / "res", replace=True, **quick) == out
    assert out.read_text() != fuller


def test_identical_seeds_are_a_collapse_unless_the_runs_are_identical_too(tmp_path):
    """One accuracy from every seed: runs whose losses differ got their seeds (a collapsed result, judged and
    flagged); runs whose losses are the same never did (INCONCLUSIVE, flagged identical seeds)."""
    res = tmp_path / "results"
    for seed in range(3):
        for exp, test_loss in (("ma-cifar10-vgg8-backprop", 2.3 + 0.01 * seed), ("ma-cifar10-vgg8-predsim", 0.4)):
            write_json_atomic(
                run_path("paper", exp, seed, res),
                result_file(
                    "paper",
                    exp,
                    seed,
                    metrics={
                        "test_accuracy": 90.0,
                        "train_time_s": 60.0,
                        "peak_memory_mb": 1.0,
                        "test_loss": test_loss,
                    },
                    epochs=[{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}],
                ),
            )
    cells = cells_by_id(res, "paper", "0,1,2")
    collapsed, never = cells["ma.I.vgg8.global"], cells["ma.I.vgg8.layer-wise"]  # printed 90.59 and 89.72
    assert (collapsed["verdict"], collapsed["flag"]) == ("REPRODUCED", "collapsed") and "differ" in collapsed["reason"]
    assert (never["verdict"], never["flag"]) == ("INCONCLUSIVE", "identical seeds")
    assert "never reached" in never["reason"]
    assert agg.same_runs([((1.0,),), ((1.0,),)]) is True and agg.same_runs([((1.0,),), ((1.5,),)]) is False
    assert agg.same_runs([((1.0,),), ((),)]) is None and agg.same_runs([((1.0,),)]) is None  # nothing to tell
    assert agg.run_losses(
        {"metrics": {"test_loss": 0.5, "train_time_s": 9.0}, "epochs": [{"train_loss": 1.0}, {"lr": 0.1}]}
    ) == (0.5, 1.0)  # times are not losses


def test_each_paper_is_corrected_over_its_own_cells_only(tmp_path):
    """A Ma cell significant alone (TOST p between 0.0125 and 0.05) stays REPRODUCED at its raw p when other
    papers have noisy tested cells: the correction runs over one paper's cells, never over the others'."""
    res = tmp_path / "results"
    for seed, acc in enumerate([91.09, 91.29, 90.89]):  # printed 90.59, band +-1.005: inside, near the edge
        fake_run(res, "paper", "ma-cifar10-vgg8-backprop", seed, accuracy=acc)
    for exp, printed in (("cruciata-mnist-vgg11-backprop", 98.64), ("karimi-cifar10-lenet-si_forward", 67.47)):
        for seed, off in enumerate([-3.0, 1.3, 1.0]):  # around the printed value, too noisy to decide
            fake_run(res, "paper", exp, seed, accuracy=printed + off)
    cells = cells_by_id(res, "paper", "0,1,2")
    ma = cells["ma.I.vgg8.global"]
    assert 0.0125 < float(ma["p_cell"]) < 0.05 and float(ma["p_adjusted"]) == pytest.approx(float(ma["p_cell"]))
    assert ma["verdict"] == "REPRODUCED"
    for noisy in ("cruciata.1.vgg-11.mnist.sgd.a", "karimi.3.cifar-10.proposed-method.lenet"):
        assert cells[noisy]["verdict"] == "INCONCLUSIVE" and cells[noisy]["correction"] == "bh"


def test_an_average_with_a_failed_member_is_not_judged_on_the_survivors(tmp_path, monkeypatch):
    monkeypatch.setattr(agg, "support", lambda exp, profile: "")  # pretend Learn & Drop is implemented
    res = tmp_path / "results"

    def learn_drop(i, seed):
        failed = i == 4 and seed == 1
        return {
            "train_time_s": 600.0 + seed,
            "status": "FAILED" if failed else "FINISHED",
            "error": "RuntimeError: boom" if failed else None,
        }

    cruciata_runs(res, learn_drop)
    cells = cells_by_id(res, "paper", "0,1")
    avg = cells["cruciata.text.vgg-average.dropping.dt"]
    assert avg["status"] == "FAILED" and avg["verdict"] == "FAILED" and avg["n"] == "1"


def test_learn_drop_flops_need_both_runs_finished(tmp_path):
    res = tmp_path / "results"
    for seed in (0, 1):
        for method in ("learn_drop", "backprop"):
            eid = f"cruciata-imagenette-vgg11-{method}"
            failed = method == "backprop" and seed == 1
            fake_run(
                res,
                "paper",
                eid,
                seed,
                status="FAILED" if failed else "FINISHED",
                error="RuntimeError: boom" if failed else None,
            )
            path = run_path("paper", eid, seed, res)
            result = __import__("json").loads(path.read_text())
            result["metrics"]["macs_forward"] = 100.0
            result["epochs"] = [{"epoch": i + 1, "macs_epoch": 80.0} for i in range(2)]
            write_json_atomic(path, result)
    write_json_atomic(
        res / "paper" / "models" / "cruciata-vgg11.json",
        measurement_file("cruciata", "vgg11", macs=30_000_000_000, params_total=1),
    )
    cut = cells_by_id(res, "paper", "0,1")["cruciata.3.vgg-11.dropping.d-flops-pct"]
    assert cut["status"] == "FAILED" and "did not finish" in cut["reason"] and cut["n"] == "1"


def test_summaries_say_which_interval():
    assert summarize([5.0])["ci_method"] == "" and summarize([])["ci_method"] == ""
    assert summarize([5.0, 6.0])["ci_method"] == "t"


def test_a_non_finite_seed_value_makes_the_cell_diverged_in_its_status_too(tmp_path, monkeypatch):
    """A FINISHED run's metrics are finite (bench.run.results), but a value computed from them need not be (a
    saving over a zero time): the cell is DIVERGED in its status column as well as in its verdict."""
    res = tmp_path / "results"
    for seed in range(3):
        fake_run(res, "paper", "ma-cifar10-vgg8-backprop", seed, accuracy=90.0 + seed)
    value = agg.metric_value
    monkeypatch.setattr(
        agg, "metric_value", lambda claim, run, base=None: float("inf") if run["seed"] == 1 else value(claim, run, base)
    )
    cell = cells_by_id(res, "paper", "0,1,2")["ma.I.vgg8.global"]
    assert (cell["status"], cell["verdict"]) == ("DIVERGED", "DIVERGED") and "not finite" in cell["reason"]
