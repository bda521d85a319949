"""`bench audit`: each kind of inconsistency planted in a small registry is found, a consistent one yields nothing,
and the real registry's known oddities are reported with their rows."""

import pytest
from helpers import result_file

from bench.claims import audit
from bench.claims.registry import Claim
from bench.report import audit as audit_report

CLASSES = {"mnist": 10, "cifar100": 100}


def cell(
    id,
    row="r1",
    column="c",
    metric="train_time",
    printed="100.0",
    method="backprop",
    table="1",
    dataset="mnist",
    model="vgg11",
    baseline="",
    derived="",
    unit="s",
    variant="",
):
    value = (
        float(printed.rstrip("%").replace(",", ""))
        if ":" not in printed
        else int(printed.split(":")[0]) + int(printed.split(":")[1]) / 60
    )
    return Claim(
        id,
        "p",
        table,
        row,
        column,
        dataset,
        model,
        method,
        variant,
        "",
        metric,
        printed,
        value,
        unit,
        baseline,
        derived,
        "",
    )


def consistent():
    return [
        cell("t.sgd", printed="100.00"),
        cell("t.drop", printed="40.00", method="learn_drop", column="d"),
        cell(
            "t.dt",
            printed="60.00",
            method="learn_drop",
            metric="time_saving_pct",
            unit="%",
            baseline="backprop",
            column="dt",
        ),
        cell("f.sgd", printed="2,000.00", metric="flops", unit="MMac", row="r2"),
        cell("f.drop", printed="1,500.00", metric="flops", unit="MMac", method="learn_drop", row="r2", column="d"),
        cell(
            "f.cut",
            printed="25.00",
            metric="flops_reduction_pct",
            unit="%",
            method="learn_drop",
            row="r2",
            column="cut",
            baseline="backprop",
        ),
        cell("a.1", printed="90.0", metric="test_accuracy", unit="%", column="acc", row="r1"),
        cell("a.2", printed="80.0", metric="test_accuracy", unit="%", column="acc", row="r2", model="vgg16"),
        cell(
            "avg",
            printed="85.0",
            metric="test_accuracy",
            unit="%",
            column="acc",
            row="avg",
            derived="a.*",
            dataset="",
            model="",
        ),
        cell("m.s", printed="1:30", metric="train_time", unit="min", column="time", row="r3"),
    ]


def test_a_consistent_registry_has_no_finding():
    assert audit.findings(consistent(), CLASSES) == {"p": []}


def replace(claims, id, **kw):
    out = []
    for c in claims:
        if c.id == id:
            c = cell(
                id,
                **{
                    **dict(
                        row=c.row,
                        column=c.column,
                        metric=c.metric,
                        printed=c.printed,
                        method=c.method,
                        table=c.table,
                        dataset=c.dataset,
                        model=c.model,
                        baseline=c.baseline_method,
                        derived=c.derived_from,
                        unit=c.unit,
                    ),
                    **kw,
                },
            )
        out.append(c)
    return out


def only_finding(claims):
    found = audit.findings(claims, CLASSES)["p"]
    assert len(found) == 1, found
    return found[0]


def test_a_time_saving_that_its_times_do_not_give():
    f = only_finding(replace(consistent(), "t.dt", printed="58.00"))
    assert f.startswith("DERIVED t.dt") and "t.sgd" in f and "t.drop" in f and "give 60" in f
    # within the rounding of the printed numbers it is no finding: 100.00 and 40.00 allow 59.99 .. 60.01
    assert audit.findings(replace(consistent(), "t.dt", printed="60.01"), CLASSES)["p"] == []


def test_a_flops_reduction_that_its_flops_do_not_give():
    f = only_finding(replace(consistent(), "f.cut", printed="30.00"))
    assert f.startswith("DERIVED f.cut") and "f.sgd" in f and "f.drop" in f


def test_an_average_the_cells_do_not_give():
    f = only_finding(replace(consistent(), "avg", printed="87.0"))
    assert f.startswith("AVERAGE avg") and "is 85" in f


def test_the_same_configuration_printed_twice():
    claims = consistent() + [
        cell("b.again", printed="91.5", metric="test_accuracy", unit="%", column="acc", row="r9", table="2")
    ]
    f = only_finding(claims)
    assert f.startswith("TWICE") and "a.1 = 90.0" in f and "b.again = 91.5" in f


def test_a_seconds_field_of_sixty_or_more():
    f = only_finding(replace(consistent(), "m.s", printed="1:75"))
    assert f.startswith("SECONDS m.s") and "75" in f


def test_accuracy_at_chance_level():
    f = only_finding(replace(replace(consistent(), "a.2", printed="10.2"), "avg", printed="50.1"))
    assert f.startswith("CHANCE a.2") and "10 classes" in f
    # the same print on a 100-class dataset is far above chance (but then the average no longer holds)
    claims = replace(replace(consistent(), "a.2", printed="10.2", dataset="cifar100"), "avg", printed="50.1")
    assert audit.findings(claims, CLASSES)["p"] == []


def test_identical_columns():
    claims = consistent()
    claims += [
        cell(
            f"x{i}",
            row=f"r{i}",
            column="Freezing A",
            metric="test_accuracy",
            unit="%",
            printed=f"9{i}.5",
            model=f"m{i}",
        )
        for i in range(3)
    ]
    claims += [
        cell(
            f"y{i}",
            row=f"r{i}",
            column="Dropping A",
            metric="test_accuracy",
            unit="%",
            printed=f"9{i}.5",
            model=f"m{i}",
            method="learn_drop",
        )
        for i in range(3)
    ]
    found = audit.findings(claims, CLASSES)["p"]
    assert any(f.startswith("IDENTICAL p table 1: columns 'Dropping A' and 'Freezing A'") for f in found), found
    claims[-1] = cell(
        "y2",
        row="r2",
        column="Dropping A",
        metric="test_accuracy",
        unit="%",
        printed="92.4",
        model="m2",
        method="learn_drop",
    )
    assert not any(f.startswith("IDENTICAL") for f in audit.findings(claims, CLASSES)["p"])


def test_the_real_registry(tmp_path):
    found = audit.findings()
    flat = [f for items in found.values() for f in items]
    # Cruciata's identical Freezing/Dropping accuracies: expected on MNIST (no augmentation), not on the augmented sets
    from bench.report.audit import augmented

    identical = [
        f
        for items in audit.findings(augmented=augmented).values()
        for f in items
        if f.startswith("IDENTICAL cruciata table 1")
    ]
    assert identical and "without augmentation (mnist: 3 rows) equal values are what" in identical[0]
    assert "with augmentation (cifar10, imagenette: 6 rows" in identical[0]
    assert any(f.startswith("DERIVED cruciata.1.vgg-16.mnist.freezing.dt") for f in flat)  # 4.24 printed, 4.84
    assert any(f.startswith("AVERAGE cruciata.text.vgg-average.freezing.dt") and "3.95" in f for f in flat)
    assert any(f.startswith("SECONDS karimi.5.cifar-10.forward-backward.alexnet") for f in flat)  # 62:96
    assert any(f.startswith("TWICE ma cifar100 resnet18 backprop") for f in flat)
    assert any(f.startswith("IDENTICAL cruciata table 1") for f in flat)
    path = audit_report.write_audit(tmp_path / "audit.md", runs={})
    text = path.read_text()
    assert (
        f"{len(flat)} findings." in text
        and text == audit_report.write_audit(tmp_path / "again.md", runs={}).read_text()
    )
    assert any(
        f.startswith("HEADLINE cruciata.h7") for f in flat
    )  # "FLOPs reduction grows with depth": VGG-16 > VGG-19
    assert "Headline claims, holds as printed?" in text and "- yes: cruciata.h1 " in text


def test_a_headline_claim_the_printed_numbers_contradict():
    from bench.claims.headlines import Headline

    def says(relation):
        return Headline(id="p.h1", paper="p", where="Abstract", wording="w", relation=relation, a=("a.1",), b=("a.2",))

    assert audit.findings(consistent(), CLASSES, heads=[says("greater")]) == {"p": []}  # 90.0 > 80.0 as printed
    found = audit.findings(consistent(), CLASSES, heads=[says("less")])["p"]
    assert found == ["HEADLINE p.h1 (Abstract, less) does NOT hold as printed (90 vs 80); cells a.1, a.2"]


def test_eq7_as_printed_is_unbounded_and_the_runs_say_whether_it_diverged(tmp_path):
    from bench.run.results import run_path, write_json_atomic

    one, ten = audit_report.eq7_scaling()
    assert one < 0 and ten == pytest.approx(100 * one)  # J(c z) = c^2 J(z): no lower bound
    res = tmp_path / "results"
    lines = audit_report.run_findings(res)["karimi"]
    assert len(lines) == 1 and "unbounded below" in lines[0]  # no real-data runs: the formula only

    def run(profile, experiment, status, epoch=None):
        result = result_file(
            profile, experiment, 0, status, metrics={"diverged_epoch": epoch} if epoch else {"test_accuracy": 80.0}
        )
        write_json_atomic(run_path(profile, experiment, 0, res), result)

    run("check", "karimi-fashion_mnist-lenet-si_forward-literal", "DIVERGED", 1)
    run("check", "karimi-fashion_mnist-vgg16-fb_si-literal", "DIVERGED", 3)
    run("check", "karimi-fashion_mnist-alexnet-si_forward-literal", "FINISHED")
    run("check", "karimi-fashion_mnist-lenet-si_forward", "FINISHED")
    run("check", "karimi-fashion_mnist-vgg16-fb_si", "DIVERGED", 2)
    run("check", "karimi-fashion_mnist-lenet-greedy_layerwise", "DIVERGED", 2)  # not an SI run
    run("smoke", "karimi-fashion_mnist-lenet-si_forward-literal", "DIVERGED", 1)  # synthetic: no finding
    lines = audit_report.run_findings(res)["karimi"]
    assert len(lines) == 2 and "(check profile, reports/check/karimi.md)" in lines[1]
    assert "2 of 3 runs of Eq. 7 as printed (`-literal`) DIVERGED (at epoch 1-3)" in lines[1]
    assert "1 of 2 runs of the primary reading" in lines[1]
    assert "not: karimi-fashion_mnist-vgg16-fb_si/seed0" in lines[1]
    text = audit_report.write_audit(tmp_path / "audit.md", runs=audit_report.run_findings(res)).read_text()
    assert "- RUNS karimi Eq. 7 on real data (check profile" in text
