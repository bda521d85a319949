"""AG News and DBpedia (Zhang et al. 2015) as VD-CNN reads them: 1024 lower-cased character indices per sample.

Canonical files: the CSVs of Zhang et al.'s distribution, as torchtext downloads them (see RESOURCES):
root/ag_news_csv/{train,test}.csv and root/dbpedia_csv/{train,test}.csv (the latter from dbpedia_csv.tar.gz).
Each row is `class index (1..K), title, description` (DBpedia: title, content), every field may be quoted, an
internal quote is doubled. A sample's text is title + " " + description/content, the way the VD-CNN
re-implementations join Zhang's fields (ArdalanM/nlp-benchmarks src/datasets.py: "{} {}".format(title,
description), for AG News and DBpedia alike).

Line breaks: Zhang's readme says new lines are escaped as a backslash followed by "n"; in AG News a line break is
in fact a lone backslash between two words (test.csv: "a second\\team of rocketeers", "social\\network"), and
DBpedia has none. Neither newline nor backslash is in VD-CNN's alphabet, so every backslash becomes a space
(rather than an unknown character); "\\n" is therefore read as " n" (never as a newline escape: in AG News every
"\\n" is a line break before a word starting with n).

Encoding (docs/methods/si-forward.md#36-vd-cnn): ALPHABET is Conneau et al.'s dictionary; a character maps to 2 + its
index in ALPHABET,
upper-case ASCII letters to their lower-case index, anything else (including every non-ASCII character) to
UNKNOWN = 1; texts are truncated or padded with PAD = 0 to the length (1024). The vocabulary is VOCAB_SIZE = 69.

Loading encodes both splits once and caches the tensors next to the CSVs (root/<folder>/.bench-cache-<length>.pt,
keyed by the CSVs' sizes and modification times, the alphabet and the length), so that DBpedia's 560,000 rows are
not parsed again every run; where the folder is read-only (no write permission bit, or writing fails) the
cache is skipped.
"""

import csv
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from bench.claims.datasets import DatasetInfo
from bench.data.download import DataError, Resource
from bench.data.tensors import TensorData

# Conneau, Schwenk, Barrault, LeCun, "Very Deep Convolutional Networks for Text Classification" (EACL 2017): a
# dictionary of 66 symbols plus space, padding and unknown, 69 tokens. The paper's PDF typesets ' ^ ~ ` as ’ ˆ ˜ ‘;
# this is the ASCII string, in the paper's order, as the re-implementations use it (cjiang2/VDCNN data_helper.py
# has the PDF's typographic form of the same 67 characters; ZappaRoberto/VDCNN dataset.py the ASCII one with the
# comment "67 + padding (0) and unknown").
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/|_#$%^&*~`+=<>()[]{} "
PAD, UNKNOWN = 0, 1
VOCAB_SIZE = len(ALPHABET) + 2  # 69: what bench.models.vdcnn's embedding needs

# The canonical files as torchtext downloads them (pytorch/text, torchtext/datasets/ag_news.py and dbpedia.py:
# URL, MD5, _PATH, _EXTRACTED_FILES). AG News: two CSVs from mhjabreel/CharCnn_Keras (the test md5 is confirmed by
# shared/data/README.md). DBpedia: Zhang's dbpedia_csv.tar.gz on Google Drive (torchtext's URL is the second
# mirror; the first is the same file through Drive's direct-download host, which skips the "cannot scan this
# file for viruses" page that a plain GET of torchtext's URL returns for a file this size).
AG_NEWS_URL = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/"
AG_NEWS_MD5 = {"train.csv": "b1a00f826fdfbd249f79597b59e1dc12", "test.csv": "d52ea96a97a2d943681189a97654912d"}
DBPEDIA_DRIVE_ID = "0Bz8a_Dbh9QhbQ2Vic1kxMmZZQ1k"
DBPEDIA_MD5 = "dca7b1ae12b1091090db52aa7ec5ca64"
DBPEDIA_URLS = (
    f"https://drive.usercontent.google.com/download?id={DBPEDIA_DRIVE_ID}&export=download&confirm=t",
    f"https://drive.google.com/uc?export=download&id={DBPEDIA_DRIVE_ID}",
)

FOLDERS = {"ag_news": "ag_news_csv", "dbpedia": "dbpedia_csv"}
ARCHIVES = {"dbpedia": "dbpedia_csv.tar.gz"}
SPLITS = ("train.csv", "test.csv")

RESOURCES = {
    "ag_news": [Resource(f"ag_news_csv/{name}", (AG_NEWS_URL + name,), md5) for name, md5 in AG_NEWS_MD5.items()],
    "dbpedia": [Resource(ARCHIVES["dbpedia"], DBPEDIA_URLS, DBPEDIA_MD5, extract_to=FOLDERS["dbpedia"])],
}

CACHE_VERSION = 1
_CHUNK = 16384  # texts encoded at once (bounds the temporary index arrays)


def _table() -> np.ndarray:
    """Code point (0..127; 128 stands for every non-ASCII one) -> index."""
    table = np.full(129, UNKNOWN, dtype=np.uint8)
    for i, c in enumerate(ALPHABET):
        table[ord(c)] = i + 2
    for c in range(ord("A"), ord("Z") + 1):
        table[c] = table[c + 32]
    return table


_TABLE = _table()


def encode(texts: list[str], length: int = 1024) -> torch.Tensor:
    """uint8 N x length: 2 + ALPHABET index per character (case folded), UNKNOWN for other characters, PAD after
    the text; longer texts are truncated. Vectorized over all characters of a chunk of texts."""
    out = np.zeros((len(texts), length), dtype=np.uint8)
    flat = out.reshape(-1)
    for start in range(0, len(texts), _CHUNK):
        chunk = [t[:length] for t in texts[start : start + _CHUNK]]
        lens = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        points = np.frombuffer("".join(chunk).encode("utf-32-le", "surrogatepass"), dtype="<u4")
        if not len(points):
            continue
        codes = _TABLE[np.minimum(points, 128)]
        # flat position of character j of text i: (start + i) * length + j
        begins = (start + np.arange(len(chunk), dtype=np.int64)) * length - (np.cumsum(lens) - lens)
        flat[np.repeat(begins, lens) + np.arange(len(points), dtype=np.int64)] = codes
    return torch.from_numpy(out)


def _dataset_of(path: Path) -> str:
    return {folder: name for name, folder in FOLDERS.items()}.get(path.parent.name, "<dataset>")


def read_csv(path, num_classes: int, dataset: str | None = None) -> tuple[list[str], torch.Tensor]:
    """(texts, labels) of one of Zhang's CSVs: text = title + " " + description (backslashes -> spaces), label =
    class index - 1 (int64). A malformed row raises DataError naming the file and its line."""
    path = Path(path)
    name = dataset or _dataset_of(path)

    def bad(line, what):
        return DataError(
            f"{path}, line {line}: {what}; the file is truncated, corrupt or not the official {name} "
            f"CSV: delete it and run `bench data download {name}`"
        )

    texts, labels = [], []
    line, reader = 0, None
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, strict=True)
            for row in reader:
                line_start, line = line + 1, reader.line_num
                if len(row) != 3:
                    raise bad(line_start, f"{len(row)} fields, expected 3 (class index, title, description)")
                try:
                    label = int(row[0])
                except ValueError:
                    label = 0
                if not 1 <= label <= num_classes:
                    raise bad(line_start, f"class index {row[0]!r} is not an integer in 1..{num_classes}")
                labels.append(label - 1)
                texts.append(f"{row[1]} {row[2]}".replace("\\", " "))
    except csv.Error as err:
        at = reader.line_num if reader else line + 1
        where = f" (the row starting there breaks on line {at})" if at > line + 1 else ""
        raise bad(line + 1, f"not valid CSV{where}: {err}") from None
    except UnicodeDecodeError as err:
        raise bad(line + 1, f"not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err}); run `bench data download {name}`") from None
    if not labels:
        raise bad(1, "no rows")
    return texts, torch.tensor(labels, dtype=torch.int64)


def layout_problem(info: DatasetInfo, root: Path) -> str:
    root = Path(root)
    folder = FOLDERS[info.name]
    missing = [f"{folder}/{split}" for split in SPLITS if not (root / folder / split).is_file()]
    if not missing:
        return ""
    problem = f"missing {', '.join(str(root / m) for m in missing)}"
    archive = ARCHIVES.get(info.name)
    if archive and (root / archive).is_file():
        problem += f" ({root / archive} is there but not extracted: `bench data download {info.name}` extracts it)"
    return problem


def _cache_key(folder: Path, length: int) -> dict:
    files = {}
    for split in SPLITS:
        st = (folder / split).stat()
        files[split] = [st.st_size, st.st_mtime_ns]
    return {"version": CACHE_VERSION, "alphabet": ALPHABET, "length": length, "files": files}


def cache_path(info: DatasetInfo, root: Path) -> Path:
    return Path(root) / FOLDERS[info.name] / f".bench-cache-{info.size}.pt"


def _read_cache(path: Path, key: dict):
    try:
        cached = torch.load(path, weights_only=True)
        if cached.get("key") == key:
            return [cached[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except Exception:  # absent, unreadable, or from another version: encode again
        pass
    return None


def _write_cache(path: Path, key: dict, tensors):
    tmp = None
    try:
        if not path.parent.stat().st_mode & 0o222:  # marked read-only (root could still write there): leave it be
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".part")
        os.close(fd)
        torch.save({"key": key, **dict(zip(("x_train", "y_train", "x_test", "y_test"), tensors))}, tmp)
        os.replace(tmp, path)
    except OSError:  # a read-only data folder (shared copies): no cache, nothing else changes
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def load(info: DatasetInfo, root: Path) -> TensorData:
    folder = Path(root) / FOLDERS[info.name]
    path = cache_path(info, root)
    key = _cache_key(folder, info.size)
    tensors = _read_cache(path, key) if path.exists() else None
    if tensors is None:
        tensors = []
        for split in SPLITS:
            texts, labels = read_csv(folder / split, info.num_classes, info.name)
            tensors += [encode(texts, info.size), labels]
        _write_cache(path, key, tensors)
    return TensorData(*tensors, info.num_classes, kind="text")


def stand_in(info: DatasetInfo, train_samples: int, test_samples: int) -> TensorData:
    """Synthetic text with the real data's shape, dtype and label range, the same every time for a dataset (seeded
    by its name). Each class has 8 characteristic "words" (4-8 random non-space symbols of ALPHABET, so digits and
    punctuation too); a sample is 20-180 words, each one of its class's words with probability 0.35, else one of
    400 shared lower-case filler words, joined by spaces, encoded like the real text (then padding). Character
    counts alone separate the classes, and a VD-CNN learns them within a few epochs."""
    rng = np.random.default_rng(zlib.crc32(info.name.encode()))
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    symbols = np.array([c for c in ALPHABET if c != " "])
    n_fill, n_kw = 400, 8
    fill = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(n_fill)]
    keywords = ["".join(rng.choice(symbols, rng.integers(4, 9))) for _ in range(info.num_classes * n_kw)]
    words = np.array(fill + keywords, dtype=object)

    def split(n):
        labels = (np.arange(n) % info.num_classes)[rng.permutation(n)]
        counts = rng.integers(20, 181, n)
        word_label = np.repeat(labels, counts)
        total = int(counts.sum())
        ids = np.where(
            rng.random(total) < 0.35,
            n_fill + word_label * n_kw + rng.integers(0, n_kw, total),
            rng.integers(0, n_fill, total),
        )
        ends = np.cumsum(counts)
        chosen = words[ids]
        texts = [" ".join(chosen[e - c : e]) for c, e in zip(counts.tolist(), ends.tolist())]
        return encode(texts, info.size), torch.from_numpy(labels.astype(np.int64))

    x_train, y_train = split(train_samples)
    x_test, y_test = split(test_samples)
    return TensorData(x_train, y_train, x_test, y_test, info.num_classes, kind="text")
