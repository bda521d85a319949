"""The char-level text datasets (bench.data.text): encoding, Zhang's CSVs, the DBpedia archive, cache, stand-in."""

import dataclasses
import hashlib
import io
import os
import tarfile

import pytest
import torch
from conftest import SHARED_DATA, shared_missing

from bench.claims.datasets import DATASETS
from bench.data import load as data_load
from bench.data import text
from bench.data.download import DataError, Resource, extract, verify

AG, DBP = DATASETS["ag_news"], DATASETS["dbpedia"]


def idx(c):
    return text.ALPHABET.index(c) + 2


def decode(row: torch.Tensor) -> str:
    """Indices back to characters ('?' stands for unknown), padding dropped."""
    chars = {i + 2: c for i, c in enumerate(text.ALPHABET)}
    return "".join(chars.get(v, "?") for v in row.tolist() if v)


# --- alphabet and encoding --------------------------------------------------------------------------------------


def test_alphabet():
    assert len(text.ALPHABET) == 67 and len(set(text.ALPHABET)) == 67
    assert text.VOCAB_SIZE == 69 and text.ALPHABET == text.ALPHABET.lower() and text.ALPHABET.isascii()
    assert " " in text.ALPHABET and "\\" not in text.ALPHABET and "\n" not in text.ALPHABET


def test_encode_by_hand():
    x = text.encode(["Ab 1!é", ""], 8)
    assert x.dtype == torch.uint8 and x.shape == (2, 8)
    # a=2, b=3, space is the last symbol (66 -> 68), '1' = 26+1 -> 29, '!' = 40 -> 42, 'é' unknown, then padding
    assert x[0].tolist() == [2, 3, 68, 29, 42, 1, 0, 0]
    assert x[1].tolist() == [0] * 8
    assert text.encode([], 8).shape == (0, 8)


def test_encode_case_unknowns_padding_truncation():
    assert torch.equal(text.encode(["HeLLo WORLD"]), text.encode(["hello world"]))
    # every non-alphabet character is one unknown, whatever its UTF-8 length (é 2 bytes, € 3, an emoji 4)
    x = text.encode(["a\tb\\c@dé€🙂z"], 16)[0]
    assert x.tolist() == [idx("a"), 1, idx("b"), 1, idx("c"), 1, idx("d"), 1, 1, 1, idx("z")] + [0] * 5
    long = "x" * 1500
    y = text.encode([long, "ab"])
    assert y.shape == (2, 1024) and (y[0] == idx("x")).all()
    assert y[1, :2].tolist() == [2, 3] and (y[1, 2:] == 0).all()
    assert int(y.max()) <= text.VOCAB_SIZE - 1


# --- Zhang's CSVs through layout_problem / load ---------------------------------------------------------------

AG_TRAIN = (
    '"3","Wall St. Bears Claw Back","Reuters - Short-sellers, Wall Street\'s dwindling\\band of ultra-cynics."\n'
    '"4","He said ""hello""","A quoted ""word"", a comma, and an escaped\\nline"\n'
    '"1","World","News from\nseveral lines"\n'
    '"2","Sports","Goal!"\n'
)
AG_TEST = '"1","T1","D1"\n"2","T2","D2"\n"3","T3","D3"\n'


def write_ag(root, train=AG_TRAIN, test=AG_TEST):
    folder = root / "ag_news_csv"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text(train, encoding="utf-8")
    (folder / "test.csv").write_text(test, encoding="utf-8")
    return folder


def test_read_csv_fields(tmp_path):
    folder = write_ag(tmp_path)
    texts, labels = text.read_csv(folder / "train.csv", 4)
    assert labels.dtype == torch.int64 and labels.tolist() == [2, 3, 0, 1]
    # title + " " + description; a backslash (Zhang's line-break mark) becomes a space; "" is one quote
    assert texts[0] == "Wall St. Bears Claw Back Reuters - Short-sellers, Wall Street's dwindling band of ultra-cynics."
    assert texts[1] == 'He said "hello" A quoted "word", a comma, and an escaped nline'
    assert texts[2] == "World News from\nseveral lines"  # a quoted field may span lines


def test_ag_news_layout_and_load(tmp_path, monkeypatch):
    assert "ag_news_csv/train.csv" in text.layout_problem(AG, tmp_path)
    assert "ag_news_csv/test.csv" in text.layout_problem(AG, tmp_path)
    write_ag(tmp_path)
    assert text.layout_problem(AG, tmp_path) == ""
    data = text.load(AG, tmp_path)
    assert data.kind == "text" and data.num_classes == 4 and data.problems(AG) == []
    assert data.x_train.shape == (4, 1024) and data.x_test.shape == (3, 1024)
    assert data.y_test.tolist() == [0, 1, 2]
    assert decode(data.x_train[0]).startswith("wall st. bears claw back reuters - short-sellers, wall street's")
    assert decode(data.x_train[2]) == "world news from?several lines"  # a real newline is not in the alphabet
    # the whole path, bench.data.load with the catalog pointing at this module (catalog.py gets loader="text")
    monkeypatch.setitem(DATASETS, "ag_news", dataclasses.replace(AG, loader="text"))
    via = data_load("ag_news", {"data": {"source": "real"}, "input_size": 1024}, root=tmp_path)
    assert torch.equal(via.x_train, data.x_train) and torch.equal(via.y_test, data.y_test)


def dbpedia_archive(root):
    """A DBpedia-style dbpedia_csv.tar.gz (folder dbpedia_csv/ with train.csv, test.csv, classes.txt)."""
    classes = (
        "Company\nEducationalInstitution\nArtist\nAthlete\nOfficeHolder\nMeanOfTransportation\nBuilding\n"
        "NaturalPlace\nVillage\nAnimal\nPlant\nAlbum\nFilm\nWrittenWork\n"
    )
    files = {
        "dbpedia_csv/train.csv": "".join(
            f'{k},"Title {k}"," Content of class {k}, with ""quotes""."\n' for k in range(1, 15)
        ),
        "dbpedia_csv/test.csv": '14,"WrittenWork","  A book."\n1,"E. D. Abbott Ltd"," Abbott of Farnham."\n',
        "dbpedia_csv/classes.txt": classes,
    }
    path = root / "dbpedia_csv.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_dbpedia_archive_extract_and_load(tmp_path):
    canonical = text.RESOURCES["dbpedia"][0]
    assert canonical.filename == "dbpedia_csv.tar.gz" and canonical.extract_to == "dbpedia_csv"
    archive = dbpedia_archive(tmp_path)
    resource = Resource(
        canonical.filename, (), hashlib.md5(archive.read_bytes()).hexdigest(), extract_to=canonical.extract_to
    )
    assert verify(resource, tmp_path)[0] is True
    problem = text.layout_problem(DBP, tmp_path)
    assert "dbpedia_csv/train.csv" in problem and "not extracted" in problem
    extract(resource, tmp_path)
    assert text.layout_problem(DBP, tmp_path) == ""
    assert (tmp_path / "dbpedia_csv" / "classes.txt").is_file()
    data = text.load(DBP, tmp_path)
    assert data.problems(DBP) == [] and data.num_classes == 14
    assert data.y_train.tolist() == list(range(14)) and data.y_test.tolist() == [13, 0]
    assert decode(data.x_test[0]) == "writtenwork   a book."
    assert decode(data.x_train[0]) == 'title 1  content of class 1, with "quotes".'


# --- malformed rows ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_row,what",
    [
        ('"2","only two fields"\n', "2 fields, expected 3"),
        ('"x","title","description"\n', "'x' is not an integer in 1..4"),
        ('"5","title","description"\n', "'5' is not an integer in 1..4"),
        ('"0","title","description"\n', "'0' is not an integer in 1..4"),
        ('"1","title","an unclosed quote\n', "not valid CSV"),
    ],
)
def test_malformed_rows(tmp_path, bad_row, what):
    # row 1 spans lines 1-2 (a quoted line break), so the bad row starts on line 3
    folder = write_ag(tmp_path, train='"1","a","b\nc"\n' + bad_row + '"2","t","d"\n')
    with pytest.raises(DataError) as err:
        text.read_csv(folder / "train.csv", 4)
    message = str(err.value)
    assert str(folder / "train.csv") in message and what in message
    assert "line 3" in message
    assert "bench data download ag_news" in message
    with pytest.raises(DataError, match="train.csv"):
        text.load(AG, tmp_path)


def test_empty_or_unreadable_csv(tmp_path):
    folder = write_ag(tmp_path, train="")
    with pytest.raises(DataError, match="no rows"):
        text.read_csv(folder / "train.csv", 4)
    (folder / "test.csv").write_bytes(b'"1","caf\xe9","latin-1, not UTF-8"\n')
    with pytest.raises(DataError, match="not UTF-8"):
        text.read_csv(folder / "test.csv", 4)


# --- the real files in shared/data ------------------------------------------------------------------------------


def test_real_ag_news_test_split():
    path = SHARED_DATA / "ag_news" / "ag_news_csv" / "test.csv"
    if not path.is_file():
        shared_missing(f"the real AG News test.csv is not at {path}")
    assert (
        hashlib.md5(path.read_bytes()).hexdigest() == "d52ea96a97a2d943681189a97654912d" == text.AG_NEWS_MD5["test.csv"]
    )
    texts, labels = text.read_csv(path, 4)
    assert len(texts) == 7600 and torch.bincount(labels).tolist() == [1900] * 4
    assert texts[0].startswith("Fears for T N pension after talks Unions representing workers")
    x = text.encode(texts)
    assert x.shape == (7600, 1024) and x.dtype == torch.uint8
    assert (x[:, 0] > 1).all()  # every sample starts with an alphabet character
    unknown = (x == 1).sum() / (x > 0).sum()
    assert unknown < 0.01  # the alphabet covers nearly all of AG News
    # only the test split is shared: the layout check names the missing train.csv
    assert "ag_news_csv/train.csv" in text.layout_problem(AG, path.parent.parent)


def test_real_dbpedia_samples():
    folder = SHARED_DATA / "dbpedia" / "hf_dummy" / "dbpedia_csv"
    if not folder.is_dir():
        shared_missing(f"the DBpedia sample rows are not at {folder}")
    for split in ("train.csv", "test.csv"):
        texts, labels = text.read_csv(folder / split, 14)
        assert len(texts) == 5 and labels.tolist() == [0] * 5  # the first rows of the official files: Company
        assert all("  " in t for t in texts)  # title + " " + content, whose first character is a space
    texts, _ = text.read_csv(folder / "train.csv", 14)
    assert texts[0].startswith("E. D. Abbott Ltd  Abbott of Farnham")
    classes = (SHARED_DATA / "dbpedia" / "dbpedia_csv" / "classes.txt").read_text().split()
    assert len(classes) == DBP.num_classes and classes[0] == "Company"


# --- stand-in ---------------------------------------------------------------------------------------------------


def char_profile(x):
    counts = torch.zeros(len(x), text.VOCAB_SIZE).scatter_add_(1, x.long(), torch.ones(x.shape))[:, 1:]
    return counts / counts.sum(1, keepdim=True)


@pytest.mark.parametrize("name", ["ag_news", "dbpedia"])
def test_stand_in_shape_and_learnable(name):
    info = DATASETS[name]
    data = text.stand_in(info, 256, 200)
    assert data.problems(info) == [] and data.kind == "text"
    assert data.x_train.shape == (256, 1024) and data.x_test.shape == (200, 1024)
    assert int(data.x_train.max()) <= len(text.ALPHABET) + 1
    assert set(data.y_train.tolist()) == set(range(info.num_classes))
    filled = data.x_train > 0
    assert (filled[:, 0]).all() and (filled[:, :-1] >= filled[:, 1:]).all()  # text, then only padding
    again = text.stand_in(info, 256, 200)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    # nearest centroid on character frequencies, fitted on train, scored on the held-out test samples
    p_train, p_test = char_profile(data.x_train), char_profile(data.x_test)
    centroids = torch.stack([p_train[data.y_train == k].mean(0) for k in range(info.num_classes)])
    accuracy = (torch.cdist(p_test, centroids).argmin(1) == data.y_test).float().mean().item()
    assert accuracy > 0.9 > 3 / info.num_classes


def test_stand_ins_differ_between_datasets():
    assert not torch.equal(text.stand_in(AG, 8, 1).x_train, text.stand_in(DBP, 8, 1).x_train)


# --- cache ------------------------------------------------------------------------------------------------------


def test_cache_used_then_refreshed(tmp_path, monkeypatch):
    folder = write_ag(tmp_path)
    first = text.load(AG, tmp_path)
    cache = text.cache_path(AG, tmp_path)
    assert cache == folder / ".bench-cache-1024.pt" and cache.is_file()
    assert not [p for p in folder.iterdir() if p.suffix == ".part"]

    read = text.read_csv

    def forbidden(*args, **kwargs):
        raise AssertionError("the CSVs were parsed again although the cache is valid")

    monkeypatch.setattr(text, "read_csv", forbidden)
    second = text.load(AG, tmp_path)
    assert torch.equal(second.x_train, first.x_train) and torch.equal(second.y_test, first.y_test)

    # an edited CSV is read again
    with open(folder / "test.csv", "a", encoding="utf-8") as f:
        f.write('"4","T4","D4"\n')
    stamp = (folder / "test.csv").stat()
    os.utime(folder / "test.csv", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    calls = []
    monkeypatch.setattr(text, "read_csv", lambda *a, **k: calls.append(a) or read(*a, **k))
    third = text.load(AG, tmp_path)
    assert len(calls) == 2 and third.y_test.tolist() == [0, 1, 2, 3]
    monkeypatch.setattr(text, "read_csv", forbidden)
    assert text.load(AG, tmp_path).y_test.tolist() == [0, 1, 2, 3]


def test_corrupt_cache_is_replaced(tmp_path):
    write_ag(tmp_path)
    cache = text.cache_path(AG, tmp_path)
    cache.write_bytes(b"not a torch file")
    data = text.load(AG, tmp_path)
    assert data.x_train.shape == (4, 1024)
    assert torch.load(cache, weights_only=True)["x_train"].shape == (4, 1024)


def test_read_only_folder_gets_no_cache(tmp_path):
    folder = write_ag(tmp_path)
    folder.chmod(0o555)
    try:
        data = text.load(AG, tmp_path)
        assert data.x_train.shape == (4, 1024)
        assert not text.cache_path(AG, tmp_path).exists()
    finally:
        folder.chmod(0o755)
