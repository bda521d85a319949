"""The claims registry is a faithful transcription of the papers' results tables.

Every row's printed string is found in its paper's table, in the line of its row and under its column; the
per-table counts equal the shapes in papers.yaml and the number of numeric cells in the paper's table; the
parsed value matches the printed string. Malformed rows are refused with one clear message.
"""

import csv
import re
import shutil

import pytest
from conftest import paper_text

from bench import BenchError
from bench.claims.registry import CLAIMS_DIR, FIELDS, load_claims, members, papers

NUMBER = re.compile(r"^[\d,]+(\.\d+)?(%| seconds| MB| GB)?$|^\d+:\d\d$")


def lines_of(paper):
    return paper_text(papers()[paper]["source"]).split("\n")


def block(lines, anchor_index, step):
    """The tab-separated lines next to a caption, walking forward (step 1) or backward (step -1)."""
    out, i = [], anchor_index + step
    while 0 <= i < len(lines) and ("\t" in lines[i] or not lines[i].strip()):
        if "\t" in lines[i]:
            out.append(lines[i].split("\t"))
        i += step
    return out if step == 1 else out[::-1]


def table_block(paper, table):
    """(header rows, data rows) of one printed table, located by its caption."""
    lines = lines_of(paper)
    if paper == "ma":
        start = lines.index(f"TABLE {table}")
        header = next(i for i in range(start, len(lines)) if lines[i].startswith("Model\t"))
        rows = block(lines, header - 1, 1)
        return rows[:1], rows[1:]
    if paper == "karimi":
        cap = next(i for i, line in enumerate(lines) if line.startswith(f"**Table {table}.**"))
        rows = block(lines, cap, -1)
        return rows[:1], rows[1:]
    if paper == "cruciata":
        prefix = "Table 3 FLOPs" if table == "3" else f"Table {table} Fast Training"
        rows = block(lines, next(i for i, line in enumerate(lines) if line.startswith(prefix)), 1)
        return rows[:2], rows[2:]
    if paper == "bhyravabhottla":
        cap = next(i for i, line in enumerate(lines) if line.startswith("Table 1. Performance"))
        rows = block(lines, cap, -1)
        return rows[:1], rows[1:]
    raise AssertionError(paper)


def column_labels(header):
    """Printed column label per field index; two header rows combine as 'group / label' (groups fill right)."""
    if len(header) == 1:
        return header[0]
    top, sub = header
    labels, group = [], ""
    for i, label in enumerate(sub):
        group = top[i] if i < len(top) and top[i] else group
        labels.append(f"{group} / {label}" if label else group)
    return labels


def row_matches(paper, table, claim_row, fields, dataset_above):
    parts = claim_row.split(" / ")
    if paper == "ma" or (paper == "cruciata" and table == "3"):
        return fields[0] == claim_row
    if paper == "karimi":
        return fields[1] == parts[1] and dataset_above == parts[0]
    if paper == "cruciata":
        return fields[:2] == parts
    if paper == "bhyravabhottla":  # the architecture labels are scattered by the conversion: match the method
        return fields[1].split()[0] == parts[1].split()[0]
    raise AssertionError(paper)


def table_claims():
    return [(p, t) for p, meta in papers().items() for t in meta["tables"] if t != "text"]


def test_registry_has_every_cell_once():
    claims = load_claims()
    assert len({c.id for c in claims}) == len(claims)
    assert 460 <= len(claims) <= 480  # the papers print about 470 result cells
    for paper, meta in papers().items():
        for table, tmeta in meta["tables"].items():
            rows, cols = tmeta["shape"]
            found = [c for c in claims if c.paper == paper and c.table == table]
            assert len(found) == rows * cols, (paper, table)
            assert len({c.row for c in found}) == rows and len({c.column for c in found}) == cols, (paper, table)


@pytest.mark.parametrize("paper,table", table_claims())
def test_counts_match_the_printed_table(paper, table):
    """The number of numeric cells in the paper's own table equals the registry's count for it."""
    header, data = table_block(paper, table)
    labels = column_labels(header)
    result_columns = {c.column for c in load_claims() if c.paper == paper and c.table == table}
    idx = [i for i, label in enumerate(labels) if label in result_columns]
    assert len(idx) == len(result_columns), f"columns not found in the printed header: {result_columns} vs {labels}"
    printed_numbers = sum(1 for f in data for i in idx if i < len(f) and NUMBER.match(f[i].strip()))
    assert printed_numbers == sum(1 for c in load_claims() if c.paper == paper and c.table == table)


@pytest.mark.parametrize("paper,table", table_claims())
def test_printed_strings_sit_in_their_row_and_column(paper, table):
    header, data = table_block(paper, table)
    labels = column_labels(header)
    for c in (c for c in load_claims() if c.paper == paper and c.table == table):
        col = labels.index(c.column)
        dataset_above, hits = "", 0
        for fields in data:
            dataset_above = fields[0] or dataset_above
            if (
                col < len(fields)
                and fields[col] == c.printed
                and row_matches(paper, table, c.row, fields, dataset_above)
            ):
                hits += 1
        assert hits == 1, f"{c.id}: printed {c.printed!r} found {hits} times in row {c.row!r}, column {c.column!r}"


def test_text_claims_are_in_the_text():
    for c in load_claims():
        if c.table != "text":
            continue
        text = " ".join(lines_of(c.paper))
        anchor = c.row.split(" / ")[1]
        if c.paper == "bhyravabhottla":  # "The second convolutional layer ... so it also has 896 parameters"
            start = text.index(anchor) + len(anchor)
            ends = [text.find(k, start) for k in ("convolutional layer", "fully connected layer")]
            end = min(e for e in ends if e > 0)
            assert re.search(rf"\b{c.printed}\b", text[start:end]), c.id
        else:  # "... on average these percentages are 3.52% for the freezing layer method"
            family = anchor.split()[0]
            pos = text.index(c.printed)
            assert family in text[max(0, pos - 1500) : pos] or family in text[pos : pos + 200], c.id


def test_values_parse_their_printed_strings():
    for c in load_claims():
        s = (
            c.printed.replace(",", "")
            .removesuffix("%")
            .removesuffix(" seconds")
            .removesuffix(" MB")
            .removesuffix(" GB")
        )
        if ":" in s:
            minutes, seconds = s.split(":")
            expected = int(minutes) + int(seconds) / 60
        else:
            expected = float(s)
        assert c.value == pytest.approx(expected, rel=1e-9), c.id


def test_odd_printed_values_are_kept_and_explained():
    by_id = {c.id: c for c in load_claims()}
    odd = by_id["karimi.5.cifar-10.forward-backward.alexnet"]
    assert odd.printed == "62:96" and "96" in odd.note and odd.value == pytest.approx(63.6)
    gb = by_id["bhyravabhottla.1.densenet.layer-to-layer.memory"]
    assert gb.unit == "GB" and gb.printed == "7.77 GB" and "without an architecture label" in gb.note
    twice = by_id["ma.VI.resnet18.layer-wise"]
    assert "62.32" in twice.note  # the same configuration printed with another value in Table IV


def test_every_method_column_maps_to_a_method():
    claims = load_claims()
    cruciata = [c for c in claims if c.paper == "cruciata" and c.table in ("1", "2")]
    assert {c.method for c in cruciata if c.column.startswith("SGD")} == {"backprop"}
    assert {c.method for c in cruciata if c.column.startswith("Freezing")} == {"freezing"}
    assert {c.method for c in cruciata if c.column.startswith("Dropping")} == {"learn_drop"}
    assert all(c.baseline_method == "backprop" for c in cruciata if c.metric == "time_saving_pct")
    ma = [c for c in claims if c.paper == "ma"]
    assert {c.method for c in ma if c.column == "Layer-wise"} == {"predsim"}
    assert {c.dataset for c in ma if c.table in ("I", "III", "V")} == {"cifar10"}
    assert {c.dataset for c in ma if c.table in ("II", "IV", "VI")} == {"cifar100"}
    adam = [c for c in claims if c.paper == "karimi" and "Adam" in c.row]
    assert adam and {(c.method, c.variant) for c in adam} == {("backprop", "adam")}


def test_text_averages_average_the_right_cells():
    claims = load_claims()
    by_id = {c.id: c for c in claims}
    avg = by_id["cruciata.text.vgg-average.dropping.dt"]
    parts = members(avg, claims)
    assert len(parts) == 9 and {p.table for p in parts} == {"1"} and {p.metric for p in parts} == {"time_saving_pct"}
    assert all(p.method == "learn_drop" for p in parts)


def test_cli_prints_the_whole_registry_as_csv(capsys):
    from bench.cli import main

    assert main(["claims", "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == len(load_claims())
    required = "paper,table,row,column,dataset,model,method,metric,printed,value,unit".split(",")
    assert set(required) <= set(rows[0])
    cell = next(r for r in rows if r["id"] == "cruciata.1.vgg-11.mnist.sgd.a")
    assert cell["experiment"] == "cruciata-mnist-vgg11-backprop" and cell["printed"] == "98.64"


def _corrupt(tmp_path, paper, line_no, field, value):
    """Copy the registry to tmp_path and set one field of one data row."""
    for f in CLAIMS_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / f"{paper}.csv"
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    rows[line_no - 2][field] = value
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return tmp_path


@pytest.mark.parametrize(
    "line,field,value,message",
    [
        (2, "metric", "accuracy", "metric 'accuracy' is not one of"),
        (2, "value", "ninety", "value 'ninety' is not a number"),
        (2, "table", "VII", "table 'VII' is not a table of ma"),
        (2, "unit", "min", "unit 'min' does not fit metric test_accuracy"),
        (2, "method", "dropout", "method 'dropout' is not one of"),
        (2, "dataset", "svhn", "dataset 'svhn' is not one of"),
        (3, "id", "ma.I.vgg8.layer-wise", "id 'ma.I.vgg8.layer-wise' repeats line 2"),
        (2, "printed", "", "field 'printed' is empty"),
        (2, "value", "1.0", "value 1.0 is not what printed"),
        (2, "printed", "n/a", "is not what printed 'n/a' reads (no number)"),
    ],
)
def test_malformed_rows_are_refused_with_file_and_line(tmp_path, line, field, value, message):
    claims_dir = _corrupt(tmp_path, "ma", line, field, value)
    with pytest.raises(BenchError) as err:
        load_claims(claims_dir)
    assert f"ma.csv line {line}:" in str(err.value) and message in str(err.value)


def test_row_with_missing_fields_is_refused(tmp_path):
    for f in CLAIMS_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    with open(tmp_path / "karimi.csv", "a", encoding="utf-8") as f:
        f.write("karimi.3.x,karimi,3,row\n")
    with pytest.raises(BenchError, match=r"karimi.csv line 132: expected 17 comma-separated fields"):
        load_claims(tmp_path)
