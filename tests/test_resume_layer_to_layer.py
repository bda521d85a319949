"""Resume of the staged layer-to-layer loop: a job killed in a later stage resumes in that stage (the earlier stages
are skipped, the stage's window, optimizer and scheduler restored) and ends exactly as an uninterrupted run."""

import json

import pytest
import torch
from helpers import separable
from test_method_layer_to_layer import TINY, build, cfg_for
from test_resume import COMPARED, bench_run, kill_in_epoch, trajectory, uninterrupted

from bench.methods import layer_to_layer as l2l
from bench.methods import training
from bench.methods.checkpoint import Checkpoint
from bench.methods.training import FAULT_ENV, Context, InjectedFault

EXPERIMENT = "bhyravabhottla-cifar10-cnn12-layer_to_layer"


@pytest.mark.slow
def test_a_killed_layer_to_layer_run_resumes_in_its_stage(tmp_path, smoke_runs):
    # smoke: 6 stages of 1 epoch; killed in the 2nd batch of epoch 4 (stage 3)
    out = tmp_path / "run" / "seed0.json"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    killed = bench_run(EXPERIMENT, out, {**env, FAULT_ENV: kill_in_epoch(EXPERIMENT, 4, batch=2)})
    assert killed.returncode == -9 and not out.exists()  # SIGKILL
    saved = torch.load(out.with_name("seed0.ckpt.pt"), weights_only=True)
    assert saved["epoch"] == 3 and saved["values"]["stage"] == 2 and len(saved["records"]) == 3

    resumed = bench_run(EXPERIMENT, out, env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed after epoch 3" in resumed.stdout
    result = json.loads(out.read_text())
    assert result["status"] == "FINISHED" and result["resumed_from_epoch"] == 3
    assert [e["stage"] for e in result["epochs"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    reference = uninterrupted(smoke_runs, EXPERIMENT)
    assert trajectory(result) == trajectory(reference)  # bit for bit: same losses, accuracies, learning rates
    metrics, expected = result["metrics"], reference["metrics"]
    assert metrics["test_accuracy"] == expected["test_accuracy"]
    same = [
        k
        for k in expected
        if k.startswith(("stage", "standard_", "test_", "num_", "total_")) and not k.endswith("_time_s")
    ]
    assert {k: metrics[k] for k in same} == {k: expected[k] for k in same}
    assert metrics["staged_wall_time_s"] >= metrics["train_time_s"] > 0


def test_resume_in_the_middle_of_a_stage_restores_its_optimizer(tmp_path, monkeypatch):
    """2 epochs per stage, stopped in the second epoch of stage 1: Adam's moments of that stage must come back."""
    cfg = cfg_for(epochs_per_stage=2, stages=3)  # 48 samples, batch 16: 3 batches an epoch, 6 epochs
    data = separable(size=32)
    cpu = torch.device("cpu")

    torch.manual_seed(0)
    reference = []
    expected = l2l.train(build("cnn12", 4, width_mult=TINY), data, cfg, Context(cpu, 0, reference.append, False))

    path = tmp_path / "c.pt"
    ckpt = Checkpoint(path)
    torch.manual_seed(0)
    monkeypatch.setenv(FAULT_ENV, "raise:10")  # in the 2nd batch of epoch 4: stage 1, its 2nd epoch
    monkeypatch.setattr(training, "_batches_seen", 0)
    with pytest.raises(InjectedFault):
        l2l.train(build("cnn12", 4, width_mult=TINY), data, cfg, Context(cpu, 0, ckpt.records.append, False, ckpt))
    monkeypatch.delenv(FAULT_ENV)

    ckpt = Checkpoint(path)
    assert ckpt.peek()["epoch"] == 3 and ckpt.peek()["stage"] == 1 and ckpt.peek()["stage_epoch"] == 1
    torch.manual_seed(123)  # other initial weights and RNG state: all come from the checkpoint
    model = build("cnn12", 4, width_mult=TINY)
    result = l2l.train(model, data, cfg, Context(cpu, 0, ckpt.records.append, False, ckpt))
    assert ckpt.resumed_from == 3

    keys = ("epoch", "stage", "stage_epoch", "trainable_params", *COMPARED)
    assert [[r[k] for k in keys] for r in ckpt.records] == [[r[k] for k in keys] for r in reference]
    assert {k: v for k, v in result.items() if not k.endswith("_time_s")} == {
        k: v for k, v in expected.items() if not k.endswith("_time_s")
    }
    assert result["staged_wall_time_s"] >= result["standard_wall_time_s"] >= result["standard_train_time_s"] > 0
    assert all(p.requires_grad for p in model.parameters())
