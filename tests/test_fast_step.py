"""The suite's training step against a plain reference loop (torchvision DataLoader, fp32, no tricks): the same
loss trajectory for a fixed seed on the CPU, and the same accuracy on a short run on the real MNIST; the fast-step
switches resolve per device and are recorded."""

import copy

import pytest
import torch
from conftest import shared_raw
from torch import nn

from bench import experiments as ex
from bench.data.reference import reference_loader
from bench.methods import backprop
from bench.methods.training import Context, evaluate, fast_settings, make_optimizer
from bench.models import build_model

EXPERIMENT = "karimi-fashion_mnist-lenet-backprop-sgd"


def reference_training(model, data, cfg, seed):
    """The textbook loop: DataLoader with per-sample transforms, one optimizer, the LR schedule per epoch."""
    norm = cfg["normalize"]
    loader = reference_loader(
        data.x_train,
        data.y_train,
        cfg["batch_size"],
        mean=norm["mean"],
        std=norm["std"],
        augment=cfg["augment"],
        shuffle=True,
        seed=seed,
    )
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.get("lr_milestones", []), cfg.get("lr_gamma", 0.1))
    losses = []
    for _ in range(cfg["epochs"]):
        model.train()
        total = 0.0
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        scheduler.step()
        losses.append(total / len(data.y_train))
    return losses


def both(data, epochs=2, seed=0, **overrides):
    cfg = ex.config(ex.get(EXPERIMENT), "smoke")
    cfg.update(epochs=epochs, augment={"crop_padding": 0, "hflip": False}, batch_size=64, **overrides)
    cfg["model"]["width_mult"] = 0.5
    torch.manual_seed(seed)
    model = build_model(
        cfg["architecture"], data.x_train.shape[1], data.num_classes, data.x_train.shape[-1], cfg["model"]
    )
    ref_model = copy.deepcopy(model)
    records = []
    final = backprop.train(model, data, cfg, Context(torch.device("cpu"), seed, records.append, progress=False))
    ref_losses = reference_training(ref_model, data, cfg, seed)
    return cfg, model, ref_model, final, [r["train_loss"] for r in records], ref_losses


def test_same_loss_trajectory_as_the_reference_loop():
    from bench.data import load

    cfg = ex.config(ex.get(EXPERIMENT), "smoke")
    data = load("fashion_mnist", {**cfg, "data": {"source": "synthetic", "train_samples": 512, "test_samples": 128}})
    _, model, ref_model, _, losses, ref_losses = both(data, epochs=3)
    assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_same_accuracy_on_a_short_real_mnist_run(tmp_path):
    from bench.data import load

    shared_raw("mnist", tmp_path / "MNIST" / "raw")
    cfg = ex.config(ex.get(EXPERIMENT), "check")
    data = load(
        "mnist", {**cfg, "data": {"source": "real", "train_samples": 3000, "test_samples": 1000}}, root=tmp_path
    ).subset(3000, 1000)
    # no LR decay: the smoke config's schedule, scaled to 2 epochs, would cut the LR after the first
    cfg, model, ref_model, final, losses, ref_losses = both(data, epochs=2, lr_milestones=[])
    norm = cfg["normalize"]
    from bench.data.loader import Batches

    test = Batches(data.x_test, data.y_test, 500, device=torch.device("cpu"), mean=norm["mean"], std=norm["std"])
    ref_acc = evaluate(ref_model, test, torch.device("cpu"))[1]
    assert final["test_accuracy"] > 50.0  # it learned (10 classes)
    assert abs(final["test_accuracy"] - ref_acc) <= 1.0 and losses == pytest.approx(ref_losses, rel=1e-4)


def test_fast_settings_per_device_and_config():
    from bench import BenchError

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    off = {
        "precision": "fp32",
        "channels_last": False,
        "compile": False,
        "compile_step": False,
        "cuda_graphs": False,
        "cudnn_benchmark": False,
        "random_draws": "per_batch",
    }
    assert fast_settings({}, cpu) == off
    assert fast_settings({"precision": "bf16", "channels_last": True, "compile": True}, cpu) == {
        **off,
        "precision": "bf16",
        "channels_last": True,
        "compile": True,
    }
    with pytest.raises(BenchError, match="cuda_graphs: true needs a CUDA device"):
        fast_settings({"cuda_graphs": True}, cpu)
    if not torch.cuda.is_available():  # "auto" on a GPU needs one to ask about bf16
        found = fast_settings({"channels_last": "auto", "precision": "fp32", "cuda_graphs": True}, cuda)
        assert found["channels_last"] is True and found["cuda_graphs"] is True and not found["cudnn_benchmark"]
    # cuDNN's autotuner: the GPU profiles turn it on, where it exists (CUDA); never on a CPU
    assert fast_settings({"cudnn_benchmark": True}, cuda)["cudnn_benchmark"] is True
    assert fast_settings({"cudnn_benchmark": True}, cpu)["cudnn_benchmark"] is False


def test_the_gpu_profiles_autotune_cudnn_and_say_why():
    for profile in ("paper", "scaled"):
        cfg = ex.config(ex.get("ma-cifar10-vgg8b-predsim"), profile)
        assert cfg["cudnn_benchmark"] is True and "cudnn.benchmark = True" in cfg["sources"]["cudnn_benchmark"]
    for profile in ("smoke", "check"):
        assert "cudnn_benchmark" not in ex.config(ex.get("ma-cifar10-vgg8b-predsim"), profile)


def test_the_gpu_profiles_draw_per_epoch_and_record_it():
    for profile in ("paper", "scaled", "rehearsal"):
        cfg = ex.config(ex.get("ma-cifar10-vgg8b-predsim"), profile)
        assert cfg["random_draws"] == "per_epoch" and "the same batches" in cfg["sources"]["random_draws"]
        assert fast_settings(cfg, torch.device("cpu"))["random_draws"] == "per_epoch"
    assert "random_draws" not in ex.config(ex.get("ma-cifar10-vgg8b-predsim"), "smoke")


def test_cuda_graphs_compile_the_forward_in_reduce_overhead_mode(tmp_path, monkeypatch):
    """CUDA graphs are inductor's cudagraph trees (torch.compile mode 'reduce-overhead'): the runner asks for that
    mode and records the switch. There is no GPU here, so the graphs themselves are not captured: torch.compile is
    replaced by a recorder and the CPU check of fast_settings by one that lets the switch through."""
    from bench.run.runner import RunOptions, run

    asked = []

    def recording_compile(fn, **kw):
        asked.append(kw)
        return fn

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(torch, "compile", recording_compile)
    monkeypatch.setattr(
        "bench.methods.training.fast_settings",
        lambda cfg, dev: {  # the runner imports it at call time
            "precision": "fp32",
            "channels_last": False,
            "compile": False,
            "cuda_graphs": True,
        },
    )
    result = run(EXPERIMENT, 0, "smoke", RunOptions(out=tmp_path / "graphs.json", threads=1, checkpoint=False))
    assert asked == [{"mode": "reduce-overhead"}]
    assert result["environment"]["cuda_graphs"] is True and result["status"] == "FINISHED"
    # activation recomputation, resolved at the run's start (bench/models/recompute.py): smoke leaves it off
    assert result["environment"]["activation_checkpointing"] is False
    assert result["environment"]["activation_checkpointing_why"] == "activation_checkpointing: off"


@pytest.mark.slow
def test_a_compiled_run_follows_the_same_trajectory(tmp_path, monkeypatch):
    """torch.compile (inductor, on the CPU here) changes how the forward runs, not what it computes."""
    from bench.run.runner import RunOptions, run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    plain = run(EXPERIMENT, 0, "smoke", RunOptions(out=tmp_path / "plain.json", threads=1, checkpoint=False))
    orig = ex.config

    def with_compile(exp, profile):
        return {**orig(exp, profile), "compile": True}

    monkeypatch.setattr("bench.run.runner.ex.config", with_compile)
    compiled = run(EXPERIMENT, 0, "smoke", RunOptions(out=tmp_path / "compiled.json", threads=1, checkpoint=False))
    assert compiled["environment"]["compile"] is True and plain["environment"]["compile"] is False
    assert plain["environment"]["cudnn_benchmark"] is False and torch.backends.cudnn.benchmark is False  # a CPU run
    assert compiled["environment"]["cuda_graphs"] is False
    assert [e["train_loss"] for e in compiled["epochs"]] == pytest.approx(
        [e["train_loss"] for e in plain["epochs"]], rel=1e-4
    )
    assert compiled["metrics"]["test_accuracy"] == pytest.approx(plain["metrics"]["test_accuracy"], abs=1.0)


def test_the_paper_profile_trains_in_fp32_on_a_bf16_gpu(monkeypatch):
    """Device resolution mocked (no GPU here): a CUDA device whose GPU has bf16. `auto` would take bf16; the
    `paper` and `scaled` profiles resolve fp32 as the papers trained, and say where that comes from."""
    from bench import experiments as ex

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    assert fast_settings({"precision": "auto"}, cuda)["precision"] == "bf16"
    for profile in ("paper", "scaled"):
        for eid in ex.experiments():  # every experiment of every paper
            cfg = ex.config(ex.get(eid), profile)
            assert cfg["precision"] == "fp32" and "papers trained" in cfg["sources"]["precision"], (eid, profile)
            assert fast_settings(cfg, cuda)["precision"] == "fp32"
    assert "precision" not in ex.config(ex.get("cruciata-mnist-vgg11-backprop"), "smoke")  # auto: fp32 on a CPU


def test_runs_record_the_tf32_defaults():
    from bench.run.measure import environment

    env = environment(torch.device("cpu"))
    assert isinstance(env["tf32_conv"], bool) and isinstance(env["tf32_matmul"], bool)
