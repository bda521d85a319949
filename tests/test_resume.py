"""Resume: a job SIGKILLed in the middle of an epoch resumes from its last per-epoch checkpoint when the workflow
is re-run, in the same MLflow run, and ends with exactly the metrics of an uninterrupted run (CPU, one thread)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import warm_worker_env
from test_workflow import SNAKEMAKE, snakemake

from bench.methods.checkpoint import Checkpoint
from bench.methods.training import FAULT_ENV

BENCH = [sys.executable, "-m", "bench"]


def batches_per_epoch(experiment: str) -> int:
    """Training batches in one smoke epoch of `experiment` (its stand-in samples over its batch size): the kill
    points below are counted in these, so that they follow the smoke profile's budget."""
    import math

    from bench import experiments as ex

    cfg = ex.config(ex.get(experiment), "smoke")
    return math.ceil(cfg["data"]["train_samples"] / cfg["batch_size"])


def kill_in_epoch(experiment: str, epoch: int, batch: int = 1) -> str:
    """The fault that SIGKILLs a smoke run at `batch` of `epoch` (1-based): epochs 1 .. epoch-1 are checkpointed."""
    return f"kill:{(epoch - 1) * batches_per_epoch(experiment) + batch}"


COMPARED = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")


def bench_run(experiment, out, env_extra=None, *flags):
    """`bench run` of a smoke job in a process of its own, forked from this test process's warm worker (a SIGKILL of
    the job kills that process too: returncode -9)."""
    env = {**os.environ, **warm_worker_env(), **(env_extra or {})}
    return subprocess.run(
        [
            *BENCH,
            "run",
            "-e",
            experiment,
            "--profile",
            "smoke",
            "--seed",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
            *flags,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def trajectory(result: dict) -> list[tuple]:
    return [tuple(e[k] for k in COMPARED if k in e) for e in result["epochs"]]


def uninterrupted(smoke_runs, experiment) -> dict:
    """An uninterrupted smoke run of `experiment`, seed 0: the smoke DAG's of this checkout when it is valid, else
    trained once per session (conftest.SmokeRuns)."""
    return smoke_runs.get(experiment)


@pytest.mark.slow
def test_a_killed_workflow_job_resumes_and_matches_an_uninterrupted_run(tmp_path, smoke_runs):
    experiment = "ma-cifar10-vgg8-backprop"  # smoke: killed in the first batch of epoch 2
    config = ["--cores", "1", "--config", "profile=smoke", f"only={experiment}"]
    out = tmp_path / "results/smoke/runs" / experiment / "seed0.json"
    ckpt = out.with_name("seed0.ckpt.pt")

    killed = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), *config],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, FAULT_ENV: kill_in_epoch(experiment, 2)},
    )
    assert killed.returncode != 0 and not out.exists()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 1 and len(saved["records"]) == 1  # one epoch done, killed inside the next

    again = snakemake(tmp_path, *config)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["status"] == "FINISHED" and result["resumed_from_epoch"] == 1 and not ckpt.exists()

    reference = uninterrupted(smoke_runs, experiment)
    assert trajectory(result) == trajectory(reference)  # bit for bit: same losses, accuracies, learning rates
    assert result["metrics"]["test_accuracy"] == reference["metrics"]["test_accuracy"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("layerwise-bench/smoke/ma").experiment_id
    runs = client.search_runs([exp_id])
    assert len(runs) == 1 and runs[0].info.run_id == result["mlflow"]["run_id"]  # one run, continued
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["resumed_from_epoch"] == "1"
    steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss"))
    assert steps == list(range(1, result["config"]["epochs"] + 1))


@pytest.mark.slow
def test_predsim_resumes_its_local_optimizers_and_decoders(tmp_path, smoke_runs):
    experiment = "ma-cifar10-vgg8-predsim"
    out = tmp_path / "run" / "seed0.json"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    killed = bench_run(experiment, out, {**env, FAULT_ENV: kill_in_epoch(experiment, 2)})
    assert killed.returncode == -9 and not out.exists()  # SIGKILL
    resumed = bench_run(experiment, out, env)
    assert resumed.returncode == 0 and "resumed after epoch 1" in resumed.stdout
    result = json.loads(out.read_text())
    assert result["resumed_from_epoch"] == 1
    assert trajectory(result) == trajectory(uninterrupted(smoke_runs, experiment))


def test_sequential_predsim_resumes_its_stage_and_stage_epoch(tmp_path, monkeypatch):
    """PredSim's schedule sequential (tiny VGG8b: 7 local-loss units and the output layer, 2 epochs a stage, each
    stage's LR decayed at its second epoch; dropout and augmentation draw random numbers), in this process: killed
    inside stage 1's second epoch, killed again (after resuming) in the first batch of stage 2 (its fresh optimizer
    and schedule), and again inside the output stage's second epoch; every resume goes on in the stage and stage
    epoch it stopped in, and the run ends with the records, final metrics and weights of an uninterrupted run."""
    from helpers import separable
    from test_method_predsim import build, cfg_for

    from bench.methods import predsim, training
    from bench.methods.training import Context, InjectedFault

    cfg = {
        **cfg_for(epochs=16, batch_size=8, lr=1e-3, schedule="sequential"),
        "lr_milestones": [8],
        "augment": {"crop_padding": 2, "hflip": True},
    }
    data = separable(n_train=16, n_test=8)  # 2 batches an epoch
    path = tmp_path / "seed0.ckpt.pt"

    def train_once(checkpointed=True, fault=None):
        torch.manual_seed(0)  # as the runner does before building the model
        model = build("vgg8b", size=16, num_classes=4)
        ckpt = Checkpoint(path, "test") if checkpointed else None
        records = ckpt.records if ckpt else []
        if fault:
            monkeypatch.setenv(FAULT_ENV, f"raise:{fault}")
            monkeypatch.setattr(training, "_batches_seen", 0)
        else:
            monkeypatch.delenv(FAULT_ENV, raising=False)
        out = predsim.train(model, data, cfg, Context(torch.device("cpu"), 0, records.append, False, ckpt))
        return out, records, model, ckpt

    ref_out, ref_records, ref_model, _ = train_once(checkpointed=False)
    assert [int(r["stage"]) for r in ref_records] == [s for s in range(8) for _ in range(2)]
    assert [r["lr"] for r in ref_records] == pytest.approx([1e-3, 2.5e-4] * 8)  # milestone 8 of 16 -> 1 of 2
    # (batches this process trains before the fault, epochs checkpointed then, their last stage and its epochs done)
    for fault, epochs, stage, stage_epoch in [(7, 3, 1, 1), (2, 4, 1, 2), (23, 15, 7, 1)]:
        with pytest.raises(InjectedFault):
            train_once(fault=fault)
        saved = torch.load(path, weights_only=True)
        assert (saved["epoch"], saved["values"]["stage"], saved["values"]["stage_epoch"]) == (
            epochs,
            stage,
            stage_epoch,
        )
    out, records, model, ckpt = train_once()
    assert ckpt.resumed_from == 15
    exact = lambda d: {k: v for k, v in d.items() if not k.endswith("_s")}  # noqa: E731  times are the epochs' own
    assert [exact(r) for r in records] == [exact(r) for r in ref_records]
    assert exact(out) == exact(ref_out)
    for (k, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_checkpoint_of_another_config_or_a_damaged_one_is_ignored(tmp_path, capsys):
    model = torch.nn.Linear(3, 2)
    ckpt = Checkpoint(tmp_path / "c.pt", fingerprint="config-a")
    ckpt.records.append({"epoch": 1, "train_loss": 0.5})
    ckpt.save(1, {"model": model}, {"train_time": 1.5})
    other = torch.nn.Linear(3, 2)
    values = {"train_time": 0.0}
    again = Checkpoint(tmp_path / "c.pt", fingerprint="config-a")
    assert again.restore({"model": other}, values) == 1 and values["train_time"] == 1.5
    assert torch.equal(other.weight, model.weight) and again.records == [{"epoch": 1, "train_loss": 0.5}]
    capsys.readouterr()
    assert Checkpoint(tmp_path / "c.pt", fingerprint="config-b").restore({"model": other}, values) == 0
    said = capsys.readouterr().err  # ignored, and said so in one line naming the file
    assert said.count("\n") == 1 and str(tmp_path / "c.pt") in said and "another config" in said
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    assert Checkpoint(tmp_path / "c.pt", fingerprint="config-a").restore({"model": other}, values) == 0
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "cannot be read" in said and "starts from epoch 0" in said


def test_a_background_write_keeps_the_state_of_its_epoch(tmp_path):
    """checkpoint_writes background: the states are copied to the host when the epoch ends, so training that goes on
    changing the model meanwhile does not reach the file; a failed write is raised by the next wait."""
    model = torch.nn.Linear(3, 2)
    ckpt = Checkpoint(tmp_path / "c.pt", fingerprint="f", background=True)
    ckpt.records.append({"epoch": 1})
    ckpt.save(1, {"model": model}, {"train_time": 1.0})
    at_epoch_1 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # the next epoch trains while the file is written
    ckpt.records.append({"epoch": 2})
    ckpt.wait()
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(saved["objects"]["model"]["weight"], at_epoch_1) and saved["records"] == [{"epoch": 1}]
    blocked = Checkpoint(tmp_path / "a-file" / "c.pt", background=True)
    (tmp_path / "a-file").write_text("not a folder")
    blocked.save(1, {"model": model}, {})
    with pytest.raises(OSError):
        blocked.wait()


@pytest.mark.slow
def test_background_checkpoint_writes_resume_like_the_written_ones(tmp_path, monkeypatch):
    """A run with checkpoint_writes background that fails in epoch 3 resumes from epoch 2's checkpoint and ends with
    the trajectory of an uninterrupted run with the same writes, bit for bit."""
    from bench import experiments as ex
    from bench.methods import training
    from bench.methods.training import InjectedFault
    from bench.run.runner import RunOptions, run

    experiment = "ma-cifar10-vgg8-backprop"
    original = ex.config
    monkeypatch.setattr(
        "bench.run.runner.ex.config", lambda exp, profile: {**original(exp, profile), "checkpoint_writes": "background"}
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    plain = run(experiment, 0, "smoke", RunOptions(out=tmp_path / "plain.json", threads=1))
    assert plain["environment"]["checkpoint_writes"] == "background"
    monkeypatch.setenv(FAULT_ENV, kill_in_epoch(experiment, 3).replace("kill", "raise"))
    monkeypatch.setattr(training, "_batches_seen", 0)
    out = tmp_path / "killed" / "seed0.json"
    with pytest.raises(InjectedFault):
        run(experiment, 0, "smoke", RunOptions(out=out, threads=1))
    assert torch.load(out.with_name("seed0.ckpt.pt"), weights_only=True)["epoch"] == 2
    monkeypatch.delenv(FAULT_ENV)
    resumed = run(experiment, 0, "smoke", RunOptions(out=out, threads=1))
    assert resumed["resumed_from_epoch"] == 2 and not out.with_name("seed0.ckpt.pt").exists()
    assert trajectory(resumed) == trajectory(plain)
