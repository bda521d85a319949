"""`bench` on the command line: a real run writes its result file and MLflow run; bad input gets one line."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest
from pg_mlflow import free_port

from bench.claims.registry import CLAIMS_DIR

FREE_PORT = "<a port nothing listens on>"  # in a case's args: replaced by one the OS gives when the case runs


def bench(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.slow
def test_run_writes_result_and_mlflow_run(workdir):
    proc = bench("run", "-e", "cruciata-mnist-resnet18-backprop", "--profile", "smoke", "--seed", "1", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr  # no progress bar when stderr is not a terminal
    path = workdir / "results/smoke/runs/cruciata-mnist-resnet18-backprop/seed1.json"
    result = json.loads(path.read_text())
    assert result["status"] == "FINISHED" and result["profile"] == "smoke" and result["seed"] == 1
    assert len(result["epochs"]) == result["config"]["epochs"] == 4  # smoke: Learn & Drop's paper gets 4 epochs
    for key in ("test_accuracy", "train_time_s", "peak_memory_mb", "params_total", "wall_time_s"):
        assert result["metrics"][key] > 0
    env = result["environment"]
    assert env["torch"] and env["device"].startswith("CPU") and env["code_version"]
    assert "cruciata.2.resnet-18.mnist.sgd.a" in result["cells"]
    assert result["config"]["sources"]["lr"].startswith(
        "profile smoke (bench/profiles.yaml): 0.001 x 10; the setting it scales: paper"
    )

    from mlflow.tracking import MlflowClient

    assert result["mlflow"]["tracking_uri"] == f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(result["mlflow"]["tracking_uri"])
    run = client.get_run(result["mlflow"]["run_id"])
    tags = run.data.tags
    assert (tags["paper"], tags["experiment"], tags["seed"], tags["profile"]) == (
        "cruciata",
        "cruciata-mnist-resnet18-backprop",
        "1",
        "smoke",
    )
    assert "cruciata.2.resnet-18.mnist.sgd.t" in tags["cells"] and tags["tables"] == "2"
    assert tags["code_version"] == env["code_version"]
    assert (
        run.data.params["lr"] == "0.01" and run.data.params["model.nonlinearity"] == "relu"
    )  # the paper's 0.001, x 10 in smoke
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "layerwise-bench/smoke/cruciata"


@pytest.mark.parametrize(
    "args,fragments",
    [
        (
            ["run", "-e", "ma-cifar10-vgg99-backprop", "--profile", "smoke"],
            ["unknown experiment 'ma-cifar10-vgg99-backprop'"],
        ),
        (["run", "-e", "ma-cifar10-vgg8-backprop", "--profile", "tiny"], ["unknown profile 'tiny'"]),
        (["config", "nope"], ["unknown experiment 'nope'"]),
        (
            ["run", "-e", "ma-cifar10-vgg8-backpro", "--profile", "smoke"],
            [
                "unknown experiment 'ma-cifar10-vgg8-backpro': did you mean 'ma-cifar10-vgg8-backprop'",
                "bench experiments",
            ],
        ),
        (["config", "cruciata-mnist-vgg11-freezng"], ["did you mean 'cruciata-mnist-vgg11-freezing'"]),
        (["aggregate", "--profile", "huge"], ["unknown profile 'huge'"]),
        (["run", "-e", "ma-cifar10-vgg8-backprop", "--profile", "smoke", "--seed", "-1"], ["--seed -1"]),
        (["run", "-e", "ma-cifar10-vgg8-backprop", "--profile", "smoke", "--device", "banana"], ["'banana'"]),
        (["run", "-e", "ma-cifar10-vgg8-backprop", "--profile", "smoke", "--threads", "-1"], ["--threads -1"]),
        # filters that match nothing, counts that cannot be, a server that cannot start: errors, not empty output
        (["claims", "--paper", "nope"], ["--paper nope: unknown paper"]),
        (["models", "--paper", "nope"], ["--paper nope: unknown paper"]),
        (["failed", "--profile", "nope"], ["unknown profile 'nope'"]),
        (["plan", "--seeds", "-3"], ["--seeds -3"]),
        (["plan", "--seeds", "0"], ["--seeds 0"]),
        (["ui", "--port", "99999"], ["--port 99999"]),
        (
            ["ui", "--port", FREE_PORT, "--store", "sqlite:////nonexistent/mlflow.db"],
            ["sqlite:////nonexistent/mlflow.db", "no folder /nonexistent to hold the SQLite store"],
        ),
    ],
)
def test_bad_input_is_one_line(workdir, args, fragments):
    args = [str(free_port()) if arg == FREE_PORT else arg for arg in args]  # not the default 5000: it may be taken
    assert_one_line_error(bench(*args, cwd=workdir), *fragments)


def test_the_module_docstring_lists_every_command():
    """bench/cli.py's docstring lists each command of `bench`, one line each, in the order `bench --help` does."""
    import bench.cli

    subparsers = next(a for a in bench.cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    listed = [line.split()[0] for line in bench.cli.__doc__.split("\n\n")[1].splitlines()]
    assert listed == list(subparsers.choices)


def test_config_prints_each_source_once(capsys):
    """`bench config`: one line per setting with its value and its source, each of the grid's source texts once, as
    a numbered note the settings point to ([n]), also inside a profile's note of what it scaled; --format json keeps
    every source whole under every key (what a run records)."""
    import re

    from bench.cli import main

    eid = "ma-cifar100-vgg8-backprop"
    assert main(["config", eid, "--profile", "smoke", "--format", "json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert main(["config", eid, "--profile", "smoke"]) == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())  # the notes are wrapped
    grid_source = full["sources"]["optimizer"]  # also the source of lr_gamma and weight_decay, and what epochs scales
    assert full["sources"]["lr_gamma"] == full["sources"]["weight_decay"] == grid_source
    assert full["sources"]["epochs"].endswith(f"the setting it scales: {grid_source}")
    assert flat.count(" ".join(grid_source.split())) == 1
    n = re.search(rf"\[(\d+)\] {re.escape(grid_source[:40])}", text).group(1)
    rows = {line.split()[0]: line for line in text.splitlines()[2:] if line.strip() and not line.startswith(" ")}
    for key in ("optimizer", "lr_gamma", "weight_decay"):
        assert rows[key].endswith(f"  [{n}]"), rows[key]
    assert re.fullmatch(
        rf"epochs +4 +profile smoke \(bench/profiles\.yaml\): 400 -> 4; the setting it scales: "
        rf"\[{n}\]",
        rows["epochs"],
    ), rows["epochs"]
    assert all(flat.count(" ".join(source.split())) <= 1 for source in full["sources"].values())
    assert len(text.splitlines()) < len(json.dumps(full, indent=1).splitlines())


def test_a_taken_port_is_one_line(workdir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (workdir / "mlflow.db").touch()
        assert_one_line_error(bench("ui", "--port", str(port), cwd=workdir), f"--port {port}", "in use")


def test_an_unreadable_result_file_is_one_line_naming_it(workdir):
    path = workdir / "results/smoke/runs/ma-cifar10-vgg8-backprop/seed0.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"experiment": "ma-cifar10-vg')
    assert_one_line_error(
        bench("aggregate", "--profile", "smoke", cwd=workdir),
        str(path.relative_to(workdir)),
        "not valid JSON",
        "--skip-invalid",
    )


def test_a_closed_pipe_ends_quietly(workdir):
    proc = subprocess.run(
        f"{sys.executable} -m bench claims --format csv | head -1",
        shell=True,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        executable="/bin/bash",
    )
    assert proc.stdout.startswith("paper,") and "Traceback" not in proc.stderr and proc.stderr == ""


def test_missing_dataset_outside_smoke_is_one_line(workdir):
    proc = bench(
        "run",
        "-e",
        "cruciata-cifar10-vgg11-backprop",
        "--profile",
        "paper",
        "--data-root",
        str(workdir / "no-data"),
        cwd=workdir,
    )
    assert_one_line_error(proc, "dataset cifar10 not found under", str(workdir / "no-data"), "--download")
    # no result file (the run's hidden progress file, .seed0.progress.json, says it failed: bench status reads it)
    assert not (workdir / "results").exists() or not list((workdir / "results").rglob("seed*.json"))


def test_malformed_registry_row_is_one_line(workdir):
    claims = workdir / "claims"
    shutil.copytree(CLAIMS_DIR, claims)
    text = (claims / "cruciata.csv").read_text().splitlines()
    line = next(i for i, row in enumerate(text) if ",test_accuracy," in row)
    text[line] = text[line].replace(",test_accuracy,", ",accuracy,")
    (claims / "cruciata.csv").write_text("\n".join(text) + "\n")
    proc = bench("claims", "--format", "csv", cwd=workdir, env={"BENCH_CLAIMS_DIR": str(claims)})
    assert_one_line_error(proc, f"malformed registry row: cruciata.csv line {line + 1}:", "metric 'accuracy'")
    assert proc.stdout == ""


def test_a_run_that_ends_with_a_nan_metric_is_diverged_and_one_out_of_range_failed(workdir, monkeypatch):
    import math
    import types

    from bench import methods
    from bench.run import runner

    final = {}

    def train(model, data, cfg, ctx):
        ctx.log_epoch({"epoch": 1, "train_loss": 1.0})
        ctx.log_epoch({"epoch": 2, "train_loss": 0.5})
        return dict(final)

    monkeypatch.setattr(methods, "get", lambda name: types.SimpleNamespace(train=train))
    final.update(test_accuracy=10.0, test_loss=math.nan, train_time_s=1.0)
    result = runner.run("karimi-cifar10-lenet-si_forward", 0, "smoke")
    assert result["status"] == "DIVERGED" and "final test_loss is not finite" in result["error"]
    assert result["metrics"]["diverged_epoch"] == 2
    final.update(test_accuracy=250.0, test_loss=1.0)
    result = runner.run("karimi-cifar10-lenet-si_forward", 1, "smoke")
    assert result["status"] == "FAILED" and "metrics.test_accuracy is 250, outside 0-100" in result["error"]


def test_a_diverged_run_is_recorded_not_crashed(workdir, monkeypatch):
    """A method that raises Diverged leaves a DIVERGED result file and a FAILED MLflow run tagged with why."""
    import types

    from bench import methods
    from bench.run import runner

    def train(model, data, cfg, ctx):
        ctx.log_epoch({"epoch": 1, "train_loss": 1.0})
        raise methods.Diverged(2, "train_loss is inf")

    monkeypatch.setattr(methods, "get", lambda name: types.SimpleNamespace(train=train))
    result = runner.run("karimi-cifar10-lenet-si_forward", 0, "smoke")
    assert result["status"] == "DIVERGED" and result["error"] == "diverged at epoch 2: train_loss is inf"
    assert result["metrics"]["diverged_epoch"] == 2 and len(result["epochs"]) == 1
    saved = json.loads((workdir / "results/smoke/runs/karimi-cifar10-lenet-si_forward/seed0.json").read_text())
    assert saved["status"] == "DIVERGED"
    from mlflow.tracking import MlflowClient

    run = MlflowClient(result["mlflow"]["tracking_uri"]).get_run(result["mlflow"]["run_id"])
    assert run.info.status == "FAILED" and "train_loss is inf" in run.data.tags["diverged"]
