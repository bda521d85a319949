"""Bad input of every kind, as a new user would give it, through the real command line: each case exits 2 with
one line on stderr that names the file or the option and the field, and nothing anywhere prints a traceback.

The package is copied into the test's folder, so that a case can break a grid, a profile, a tolerance or a
registry file without touching the checkout; the copy is what `python -m bench` runs (PYTHONPATH). Every case
checks its own stderr for a traceback, so the cases hold in any order and in any process (pytest-xdist)."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import result_file
from pg_mlflow import free_port

REPO = Path(__file__).resolve().parent.parent
EID = "ma-cifar100-vgg8-backprop"
KARIMI = "karimi-fashion_mnist-lenet-si_forward"
FREE_PORT = "<a port nothing listens on>"  # in a case's argv: replaced by one the OS gives when the case runs
# in a case's argv, or part of an argument: 'results', once the case's result file is planted and results/smoke
# made what the name says
READ_ONLY = "<results, its smoke folder read-only>"
FULL_DISK = "<results, aggregate's cells.csv.tmp on a full disk>"


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    """A pristine copy of the package; each case that edits a file edits its own copy of that file."""
    root = tmp_path_factory.mktemp("pkg")
    shutil.copytree(REPO / "bench", root / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit(root: Path, rel: str, change):
    path = root / "bench" / rel
    text = path.read_bytes()
    path.write_bytes(change(text))
    return lambda: path.write_bytes(text)


def replace(old: str, new: str):
    def change(text: bytes) -> bytes:
        assert old.encode() in text, old
        return text.replace(old.encode(), new.encode(), 1)

    return change


def twice(key: str):
    """A file edit: the top-level `key` given a second time, at the end of the file."""
    return lambda text: text.rstrip(b"\n") + f"\n{key}: {{}}\n".encode()


def duplicate(rel: str, key: str) -> re.Pattern:
    """What stderr says of a key given twice: the file, the line and column of the second one, the key, the first."""
    return re.compile(
        rf"^bench: error: bench/{re.escape(rel)}: line \d+, column \d+: duplicate key '{key}' "
        r"\(first at line \d+\)"
    )


def read_only(folder: Path):
    """The folder read-only for this process, and its undo: mode 555, and for root (which writes through modes)
    immutable as well (chattr +i: ext4, xfs, btrfs, tmpfs)."""
    folder.chmod(0o555)
    undo = lambda: (subprocess.run(["chattr", "-i", str(folder)], capture_output=True), folder.chmod(0o755))  # noqa: E731
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        undo()
        pytest.skip("root writes through modes and this file system cannot make a folder immutable (chattr +i)")
    return undo


def full_disk(folder: Path):
    """Every write of aggregate's cells.csv fails as on a full disk (ENOSPC, with no file name): its temporary file
    is /dev/full."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system: a full disk cannot be made without filling one")
    (folder / "cells.csv.tmp").symlink_to("/dev/full")
    return lambda: None


PLACES = {READ_ONLY: read_only, FULL_DISK: full_disk}


def plant_result(work: Path, content):
    path = work / "results" / "smoke" / "runs" / EID / "seed0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")


def good_result():
    return result_file("smoke", EID, metrics={"test_accuracy": 70.0, "train_time_s": 1.0})


def taken_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


# name -> (argv, file edit (path in bench/, change) or None, result file to plant or None, what stderr must name:
# a string it holds, or a regular expression it matches)
CASES = {
    # result files under results/<profile>/runs/ (read by aggregate, report, audit, plan)
    "truncated result JSON": (
        ["aggregate", "--profile", "smoke", "--seeds", "1"],
        None,
        lambda: json.dumps(good_result())[:50],
        f"runs/{EID}/seed0.json: is not valid JSON",
    ),
    "empty result file": (["aggregate", "--profile", "smoke", "--seeds", "1"], None, lambda: "", "empty or truncated"),
    "a list as result file": (
        ["aggregate", "--profile", "smoke", "--seeds", "1"],
        None,
        lambda: [1, 2],
        "holds a JSON list, not an object",
    ),
    "string accuracy": (
        ["aggregate", "--profile", "smoke", "--seeds", "1"],
        None,
        lambda: {**good_result(), "metrics": {"test_accuracy": "high"}},
        "metrics.test_accuracy is str, not a number",
    ),
    "no metrics": (
        ["aggregate", "--profile", "smoke", "--seeds", "1"],
        None,
        lambda: {k: v for k, v in good_result().items() if k != "metrics"},
        "has no 'metrics'",
    ),
    "seed 5 inside seed0.json": (
        ["aggregate", "--profile", "smoke", "--seeds", "1"],
        None,
        lambda: {**good_result(), "seed": 5},
        "holds seed 5",
    ),
    "accuracy 1e6": (
        ["aggregate", "--profile", "smoke", "--seeds", "1"],
        None,
        lambda: {**good_result(), "metrics": {"test_accuracy": 1e6}},
        "outside 0-100",
    ),
    # bench run's options
    "run --seed -1": (["run", "-e", EID, "--profile", "smoke", "--seed", "-1"], None, None, "--seed"),
    "run --device banana": (["run", "-e", EID, "--profile", "smoke", "--device", "banana"], None, None, "banana"),
    "run --threads -1": (["run", "-e", EID, "--profile", "smoke", "--threads", "-1"], None, None, "--threads"),
    # the configs: YAML syntax, unknown keys, types and ranges
    "YAML syntax error in a grid": (
        ["config", EID],
        ("grids/ma.yaml", replace("settings:", "settings: [")),
        None,
        "grids/ma.yaml",
    ),
    "YAML syntax error in profiles.yaml": (
        ["config", EID],
        ("profiles.yaml", replace("smoke:", "smoke: [")),
        None,
        "profiles.yaml",
    ),
    "YAML syntax error in tolerances.yaml": (
        ["aggregate", "--profile", "smoke", "--seeds", "1"],
        ("tolerances.yaml", lambda t: t + b"\n  bad: [\n"),
        None,
        "tolerances.yaml",
    ),
    "batch_size: big": (
        ["config", EID],
        ("grids/ma.yaml", replace("batch_size: 128", "batch_size: big")),
        None,
        "batch_size",
    ),
    "a grid key typo": (
        ["config", EID],
        ("grids/ma.yaml", replace("optimizer: adam", "optimiser: adam")),
        None,
        "optimizer",
    ),
    "an unknown optimizer": (
        ["config", EID],
        ("grids/ma.yaml", replace("optimizer: adam", "optimizer: adamw2")),
        None,
        "adamw2",
    ),
    "epochs: -5": (["config", EID], ("grids/ma.yaml", replace("epochs: 400", "epochs: -5")), None, "epochs"),
    "a hierarchy entry that is not a number": (
        ["config", "ma-cifar10-vgg8b_e1-backprop"],
        ("grids/ma.yaml", replace("[3, 3, 2, 2]", "[3, 3, x, 2]")),
        None,
        "hierarchy",
    ),
    "a registry value that is not its printed string": (
        ["claims"],
        ("claims/ma.csv", replace(",89.72,", ",79.72,")),
        None,
        "ma.csv",
    ),
    "a non-UTF-8 byte in a registry CSV": (
        ["claims"],
        ("claims/ma.csv", lambda t: t.replace(b"Layer-wise", b"Layer\xffwise", 1)),
        None,
        "ma.csv",
    ),
    # nothing silent (issue 31): a key given twice (YAML keeps the last one), a grid match that matches nothing
    "a duplicate key in profiles.yaml": (
        ["config", EID],
        ("profiles.yaml", twice("smoke")),
        None,
        duplicate("profiles.yaml", "smoke"),
    ),
    "a duplicate key in a grid": (
        ["config", EID],
        ("grids/ma.yaml", replace("{optimizer: adam,", "{optimizer: adam, optimizer: sgd,")),
        None,
        duplicate("grids/ma.yaml", "optimizer"),
    ),
    "a duplicate key in tolerances.yaml": (
        ["aggregate", "--profile", "smoke", "--seeds", "1"],
        ("tolerances.yaml", twice("alpha")),
        None,
        duplicate("tolerances.yaml", "alpha"),
    ),
    "a grid match naming no model": (
        ["config", KARIMI],
        ("grids/karimi.yaml", replace("[alexnet, lenet]}", "[alexnet, lenett]}")),
        None,
        re.compile(
            r"bench/grids/karimi\.yaml: settings entry \d+: match model "
            r"'lenett' names no model of the karimi experiments; "
            r"did you mean 'lenet'\?"
        ),
    ),
    "a grid match whose fields match nothing together": (
        ["config", KARIMI],
        ("grids/karimi.yaml", replace("match: {variant: growing}", "match: {variant: growing, method: backprop}")),
        None,
        "matches none of the karimi experiments together",
    ),
    "aggregate --results with a typo": (
        ["aggregate", "--profile", "smoke", "--results", "reslts"],
        None,
        None,
        "reslts: no such folder (--results)",
    ),
    "report --results with a typo": (
        ["report", "--profile", "smoke", "--results", "reslts"],
        None,
        None,
        "reslts: no such folder (--results)",
    ),
    # filters, seed counts and the UI
    "claims --paper nope": (["claims", "--paper", "nope"], None, None, "nope"),
    "models --paper nope": (["models", "--paper", "nope"], None, None, "nope"),
    "failed --profile nope": (["failed", "--profile", "nope"], None, None, "nope"),
    "plan --seeds -3": (["plan", "--profile", "smoke", "--seeds", "-3"], None, None, "--seeds"),
    "plan --seeds 0": (["plan", "--profile", "smoke", "--seeds", "0"], None, None, "--seeds"),
    "rehearse --repredict without --json": (["rehearse", "--repredict"], None, None, "--json"),
    "rehearse --resume without --keep": (
        ["rehearse", "--only", "ma-cifar10-vgg8-backprop", "--resume"],
        None,
        None,
        "--keep",
    ),
    "ui --port 99999": (["ui", "--port", "99999", "--create"], None, None, "99999"),
    "ui in a folder without a store": (["ui", "--port", FREE_PORT], None, None, "--create"),
    "ui --host that does not resolve": (
        ["ui", "--host", "nonsense.invalid", "--port", FREE_PORT],
        None,
        None,
        "--host nonsense.invalid: does not resolve",
    ),
    # MLflow URI errors (issue 31): the suite's one line naming the URI, not MLflow's; no SQLite folder created
    "ui --store nonsense": (
        ["ui", "--store", "nonsense", "--port", FREE_PORT],
        None,
        None,
        "MLflow tracking URI 'nonsense': not a URI",
    ),
    "ui --store with an unknown scheme": (
        ["ui", "--store", "sqlit:///mlflow.db", "--port", FREE_PORT],
        None,
        None,
        "unknown scheme sqlit://",
    ),
    "ui --create of an SQLite store in a missing folder": (
        ["ui", "--create", "--port", FREE_PORT, "--store", "sqlite:///no/such/folder/mlflow.db"],
        None,
        None,
        "no/such/folder to hold the SQLite store",
    ),
    # file-system errors (issue 31): one line naming the path and the reason
    "aggregate --results on a read-only folder": (
        ["aggregate", "--profile", "smoke", "--seeds", "1", "--results", READ_ONLY],
        None,
        good_result,
        re.compile(
            r"^bench: error: results/smoke/cells\.csv\.tmp: "
            r"(Permission denied|Operation not permitted|Read-only)"
        ),
    ),
    "run --out into a read-only folder": (
        ["run", "-e", EID, "--profile", "smoke", "--out", f"{READ_ONLY}/smoke/seed0.json"],
        None,
        good_result,
        re.compile(
            r"^bench: error: results/smoke: cannot write the result file there "
            r"\((Permission denied|Operation not permitted|Read-only)"
        ),
    ),
    "aggregate on a full disk": (
        ["aggregate", "--profile", "smoke", "--seeds", "1", "--results", FULL_DISK],
        None,
        good_result,
        "bench: error: results/smoke/cells.csv.tmp: No space left on device",
    ),
    "devicecheck --out naming a file": (
        ["devicecheck", "--out", f"results/smoke/runs/{EID}/seed0.json", "--budget", "5", "--device", "cpu"],
        None,
        good_result,
        f"--out results/smoke/runs/{EID}/seed0.json: a file, not a folder",
    ),
    "config of an experiment id with a typo": (["config", EID[:-1]], None, None, f"did you mean '{EID}'"),
    "run -e with a typo": (
        ["run", "-e", EID.replace("vgg8", "vgg9"), "--profile", "smoke"],
        None,
        None,
        re.compile(rf"unknown experiment '{EID.replace('vgg8', 'vgg9')}': did you mean .*'{EID}'"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(pkg, tmp_path, name):
    argv, file_edit, result, names = CASES[name]
    argv = [str(free_port()) if arg == FREE_PORT else arg for arg in argv]
    restore = edit(pkg, *file_edit) if file_edit else None
    undo = []
    try:
        if result:
            plant_result(tmp_path, result())
        undo = [make(tmp_path / "results" / "smoke") for place, make in PLACES.items() if any(place in a for a in argv)]
        for place in PLACES:
            argv = [arg.replace(place, "results") for arg in argv]
        env = {**os.environ, "PYTHONPATH": str(pkg), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
        proc = subprocess.run(
            [sys.executable, "-m", "bench", *argv], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
        )
    finally:
        if restore:
            restore()
        for step in undo:
            step()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (name, proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, (name, proc.stderr[-2000:])
    assert names.search(lines[0]) if isinstance(names, re.Pattern) else names in lines[0], (name, lines[0])


def test_ui_port_taken_is_one_line_and_exit_2(pkg, tmp_path):
    held = taken_port()
    try:
        env = {**os.environ, "PYTHONPATH": str(pkg)}
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "ui", "--port", str(held.getsockname()[1]), "--create"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        held.close()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "already in use" in proc.stderr, proc.stderr


def test_a_closed_pipe_is_quiet(tmp_path):
    proc = subprocess.run(
        f"{sys.executable} -m bench claims --format csv | head -1",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout.startswith("paper,table,row")


def test_snakemake_dry_run_with_a_broken_profile_names_the_file(pkg, tmp_path):
    """The workflow reads the same files: a YAML error reaches `snakemake -n` as one WorkflowError naming the file
    and the line (snakemake's own exit status 1), not a traceback."""
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    restore = edit(pkg, "profiles.yaml", replace("smoke:", "smoke: ["))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--config", "profile=smoke"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(pkg)},
            timeout=300,
        )
    finally:
        restore()
    out = proc.stderr + proc.stdout  # snakemake prints its WorkflowError to either, by version
    assert proc.returncode == 1 and "bench/profiles.yaml: YAML syntax error at line" in out, out
    assert "Traceback" not in out, out


def test_snakemake_with_a_key_given_twice_in_its_config_file_names_it(pkg, tmp_path):
    """workflows/config.yaml is read by Snakemake, whose loader keeps the last of two equal keys: the workflow reads
    it again through the suite's loader, and stops with one WorkflowError naming the file, the line and the key."""
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    with open(tmp_path / "workflows" / "config.yaml", "a", encoding="utf-8") as f:
        f.write("\nthreads: 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--config", "profile=smoke"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(pkg)},
        timeout=300,
    )
    out = proc.stderr + proc.stdout
    assert proc.returncode == 1 and re.search(
        r"workflows/config\.yaml: line \d+, column 1: duplicate key 'threads' "
        r"\(first at line \d+\)",
        out,
    ), out
    assert "Traceback" not in out, out


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--cores", "0", "--config", "profile=smoke"],
            "--cores 0 (or --jobs 0): no job can ever start; give --cores N (at least 1) or --cores all",
        ),
        (
            ["-n", "--config", "profile=smoke", "prifile=check"],
            "workflow config (workflows/config.yaml, --config): at top level: Additional properties are not allowed "
            "('prifile' was unexpected); did you mean 'profile'?",
        ),
    ],
)
def test_snakemake_refuses_a_bad_invocation_at_once_in_one_line(pkg, tmp_path, args, message):
    """`snakemake --cores 0` waited forever at 'Select jobs to execute...' (here the timeout would fail the test); a
    config key the schema does not know printed the whole schema after it (97 lines). Now each is one WorkflowError
    line in Snakemake's few lines of frame, exit status 1, before any job."""
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(pkg)},
        timeout=300,
    )
    out = proc.stderr + proc.stdout  # snakemake prints its WorkflowError to either, by version
    lines = out.splitlines()
    assert proc.returncode == 1 and message in lines, out
    assert len(lines) < 8 and "Failed validating" not in out and "Traceback" not in out, out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("case", ["a folder", "a read-only place", "under a file"])
def test_a_result_file_that_cannot_be_written_is_one_line_before_training(tmp_path, capsys, case):
    """bench run --out: a folder, a path on a read-only file system (/proc), a path under a file: one line naming
    the path and the reason, exit 2, before any training (no MLflow store, no lock file)."""
    from bench.cli import main

    (tmp_path / "a-file").write_text("x")
    out = {
        "a folder": tmp_path,
        "a read-only place": Path("/proc/bench-test/seed0.json"),
        "under a file": tmp_path / "a-file" / "seed0.json",
    }[case]
    assert main(["run", "-e", EID, "--profile", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error: ") and "Traceback" not in err
    assert str(out if case == "a folder" else out.parent) in err
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.glob(".*.lock"))


def test_any_file_system_error_is_one_line(tmp_path, capsys):
    """An OSError the commands do not foresee (devicecheck --out naming a file: the folder cannot be made) is the
    suite's one line with the path and the reason, exit 2, no traceback."""
    from bench.cli import main

    (tmp_path / "taken").write_text("a file")
    assert main(["devicecheck", "--out", str(tmp_path / "taken"), "--budget", "5", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "taken") in err and "Traceback" not in err


def test_a_full_disk_under_a_result_file_names_it(tmp_path, capsys, monkeypatch):
    """A write that runs out of space raises ENOSPC naming no file; the files written through write_json_atomic
    (result files, aggregate.json, report manifests) are named in the one line all the same, exit 2, and no
    temporary file is left (the command-line case 'aggregate on a full disk' is the plain-file writes)."""
    import errno

    from bench.cli import main
    from bench.run import results

    class FullDisk:  # the json module, whose dump meets a full disk
        def __getattr__(self, name):
            return getattr(json, name)

        def dump(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    plant_result(tmp_path, good_result())
    monkeypatch.setattr(results, "json", FullDisk())
    assert main(["aggregate", "--profile", "smoke", "--seeds", "1", "--results", str(tmp_path / "results")]) == 2
    out = tmp_path / "results" / "smoke" / "aggregate.json"
    assert capsys.readouterr().err == f"bench: error: {out}: No space left on device\n"
    assert not list(out.parent.glob(".aggregate.json.*"))


def test_sync_of_a_missing_results_folder_is_an_error(tmp_path, capsys, monkeypatch):
    """bench sync --results with a typo: one line naming the folder, exit 2 (it used to say '0 result files')."""
    from bench.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["sync", "--profile", "smoke", "--results", str(tmp_path / "reslts")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "reslts" / "smoke" / "runs") in err


def test_aggregate_with_fewer_seeds_than_asked_says_how_many_it_found(tmp_path, capsys):
    """aggregate --seeds 3 with one seed's result file: it aggregates (a partial run's cells are PARTIAL, and its
    report goes beside a fuller one), exit 0, but says in one line on stderr how many seeds it found, per
    experiment; with every seed asked present it says nothing."""
    from bench.cli import main

    plant_result(tmp_path, good_result())
    results = str(tmp_path / "results")
    assert main(["aggregate", "--profile", "smoke", "--results", results, "--seeds", "1"]) in (0, None)
    assert capsys.readouterr().err == ""
    assert main(["aggregate", "--profile", "smoke", "--results", results, "--seeds", "3"]) in (0, None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(
        "bench aggregate: 3 seed(s) asked (0, 1, 2) but fewer found for 1 of 1 experiment(s) "
        f"with result files: 1 of 3 for 1 ({EID})"
    ), err
