"""Activation recomputation (bench/models/recompute.py, BlockNet.recompute): a training step computes exactly what
it computes without it (loss, gradients, weights, BN statistics), the BN guard is what keeps the statistics equal,
the training forwards of the methods go through it, and the rule that switches it on (bench.cost.resources
recompute_rule) is the plan's and the run's, with its memory and time in the plan."""

import copy
import math
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from bench import BenchError
from bench import experiments as ex
from bench.cost import resources
from bench.models import build_model

# tiny models with BN and dropout: a width-reduced ResNet-18 (residual units with shortcut convs) and a VD-CNN-9
TINY = {
    "resnet": ({"base": "resnet18"}, 3, 16, {"width_mult": 0.125, "dropout": 0.2}),
    "vdcnn": ({"base": "vdcnn9"}, 1, 64, {"width_mult": 0.0625, "dropout": 0.2}),
}


def _pair(kind: str) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """The same model twice (the second recomputes), a batch and its labels."""
    arch, channels, size, opts = TINY[kind]
    torch.manual_seed(0)
    plain = build_model(arch, channels, 5, size, opts).train()
    recomputing = copy.deepcopy(plain)
    recomputing.recompute = True
    if kind == "vdcnn":
        x = torch.randint(0, 69, (6, size))
    else:
        x = torch.randn(6, channels, size, size)
    return plain, recomputing, x, torch.randint(0, 5, (6,))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 2) -> tuple[list, list, torch.Tensor]:
    """`steps` SGD steps from the same RNG state (dropout masks); the losses, the last step's gradients and the RNG
    state after them (what later steps would draw from)."""
    torch.manual_seed(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses, [p.grad.clone() for p in model.parameters()], torch.get_rng_state()


def _bn_state(model: nn.Module) -> list[torch.Tensor]:
    return [b for name, b in model.named_buffers() if "running" in name or "num_batches" in name]


@pytest.mark.parametrize("kind", sorted(TINY))
def test_a_recomputed_step_computes_exactly_the_same(kind):
    plain, recomputing, x, y = _pair(kind)
    losses, grads, rng = _train(plain, x, y)
    losses_r, grads_r, rng_r = _train(recomputing, x, y)
    assert torch.equal(torch.stack(losses), torch.stack(losses_r))
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_r))
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), recomputing.parameters()))
    bn = _bn_state(plain)
    assert bn and all(torch.equal(a, b) for a, b in zip(bn, _bn_state(recomputing)))
    assert {int(b) for n, b in plain.named_buffers() if n.endswith("num_batches_tracked")} == {2}
    assert torch.equal(rng, rng_r)


def test_the_bn_guard_keeps_the_running_statistics(monkeypatch):
    """Without the guard, the backward's recomputation updates every BN's running statistics a second time."""
    plain, recomputing, x, y = _pair("resnet")
    monkeypatch.setattr("bench.models.recompute._statistics_kept", lambda module: nullcontext())
    _train(plain, x, y, steps=1)
    _train(recomputing, x, y, steps=1)
    tracked = [int(b) for n, b in recomputing.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked and set(tracked) == {2}  # counted twice
    means = [(a, b) for (n, a), b in zip(plain.named_buffers(), recomputing.buffers()) if n.endswith("running_mean")]
    assert not all(torch.equal(a, b) for a, b in means)


def test_the_methods_training_forwards_recompute_and_evaluation_does_not(monkeypatch):
    """model(x) (backprop, Learn & Drop, Freezing, layer-to-layer) and layerwise.forward_from (fb_si's end-to-end
    stage) run every training block through the recomputation; a block in eval mode (frozen) and a forward without
    grad (evaluation) do not."""
    from bench.methods.layerwise import forward_from

    plain, model, x, _ = _pair("vdcnn")
    calls = []
    real = __import__("bench.models.common", fromlist=["checkpointed"]).checkpointed
    monkeypatch.setattr("bench.models.common.checkpointed", lambda block, f: calls.append(block) or real(block, f))
    model(x)
    assert len(calls) == len(model.blocks)
    calls.clear()
    features = model.blocks[0](x).detach()
    forward_from(model, 1, features)
    assert calls == list(model.blocks[1:])
    calls.clear()
    model.blocks[1].eval()
    forward_from(model, 1, features)
    with torch.no_grad():
        model(x)
    assert calls == list(model.blocks[2:])


def test_the_rule_and_the_setting():
    rule = resources.recompute_rule
    assert rule("auto", 30e9, 0.0) == (False, "auto: no GPU")  # a CPU: auto is off
    assert rule("auto", 30e9, 24e9)[0] and not rule("auto", 20e9, 24e9)[0]
    assert rule("on", 1.0, 0.0)[0] and not rule("off", 30e9, 24e9)[0]
    from bench.methods.training import checkpointing_setting, recompute_settings

    assert [checkpointing_setting({"activation_checkpointing": v}) for v in (True, False, "auto", "on")] == [
        "on",
        "off",
        "auto",
        "on",
    ]
    assert checkpointing_setting({}) == "off"
    with pytest.raises(BenchError, match="auto, on or off"):
        checkpointing_setting({"activation_checkpointing": "sometimes"})
    with pytest.raises(BenchError, match="cannot run with compile"):
        recompute_settings(True, "forced", {"compile": True})
    # PredSim runs its units on their own: whatever the setting, nothing to recompute (plan and run alike)
    predsim = resources.recompute_choice(ex.get("ma-cifar10-resnet50-predsim-wide"), "paper", resources.PAPERS_NODE)
    assert not predsim["on"] and "nothing to recompute" in predsim["why"]


def test_a_run_decides_on_the_memory_its_gpu_has_free_and_on_a_cpu_not_unless_forced(monkeypatch):
    """The runner's decision (bench.run.runner._memory_settings with the command line's rules, bench.cost.resources.
    run_memory_settings) for VD-CNN-29 at batch 2048 (34 GB without it): on a GPU with 40 GB free it keeps its
    activations, with 20 GB it recomputes (the free memory is given here: no GPU); without the rules (a direct call
    of `run`), on and off as set and auto off."""
    from bench.cost.resources import run_memory_settings
    from bench.run.runner import _memory_settings

    def decide(dev, free, fast, rules=run_memory_settings):
        return _memory_settings(exp, "paper", ex.config(exp, "paper"), dev, free, fast, rules)

    exp, cpu, cuda = ex.get("karimi-ag_news-vdcnn29-backprop-sgd"), torch.device("cpu"), torch.device("cuda")
    assert ex.config(exp, "paper")["activation_checkpointing"] == "auto"
    assert not decide(cuda, (40e9, 64e9), {})["activation_checkpointing"]
    tight = decide(cuda, (20e9, 64e9), {})
    assert tight["activation_checkpointing"] and "> 20.0 GB" in tight["activation_checkpointing_why"]
    with pytest.raises(BenchError, match="cannot run with compile"):
        decide(cuda, (20e9, 64e9), {"compile": True})
    off = decide(cpu, (0.0, math.inf), {})
    assert off["activation_checkpointing"] is False and off["activation_checkpointing_why"] == "auto: no GPU"
    assert decide(cuda, (20e9, 64e9), {}, rules=None)["activation_checkpointing"] is False  # no rules: auto is off
    orig = ex.config
    monkeypatch.setattr(ex, "config", lambda e, p: {**orig(e, p), "activation_checkpointing": "on"})
    assert decide(cpu, (0.0, math.inf), {})["activation_checkpointing"] is True
    assert decide(cpu, (0.0, math.inf), {}, rules=None)["activation_checkpointing"] is True


def test_the_resolved_switch_is_an_mlflow_tag():
    from bench.run import track

    exp = ex.get("karimi-ag_news-vdcnn29-backprop-sgd")
    env = {"activation_checkpointing": True, "activation_checkpointing_why": "auto: the job would not fit without it"}
    tags = track.run_tags(exp, 0, "paper", [], env, {})
    assert tags["activation_checkpointing"] is True and tags["activation_checkpointing_why"].startswith("auto:")


def test_the_plan_recomputes_a_vdcnn29_paper_job_to_fit_24_gb(monkeypatch):
    """VD-CNN-29 at batch 2048 keeps about 33 GB of activations: with recomputation half of it, and the job fits the
    papers' node; its planned time grows by one forward of the blocks per step."""
    from bench.cost.job_cost import job_cost

    exp = ex.get("karimi-ag_news-vdcnn29-backprop-sgd")
    need = resources.job_resources(exp, "paper", resources.PAPERS_NODE)
    assert need["recompute"]["on"] and "would not fit" in need["recompute"]["why"]
    assert "activations" not in need["device"] and not resources.overflow(need, resources.Node(24e9, 64e9))
    orig = ex.config
    monkeypatch.setattr(ex, "config", lambda e, p: {**orig(e, p), "activation_checkpointing": "off"})
    kept = resources.job_resources(exp, "paper", resources.PAPERS_NODE)
    assert not kept["recompute"]["on"] and resources.overflow(kept, resources.PAPERS_NODE)
    assert need["device"][resources.RECOMPUTED] < 0.6 * kept["device"]["activations"]
    monkeypatch.setattr(ex, "config", orig)
    plain, recomputed = job_cost(exp, "paper"), job_cost(exp, "paper", recompute=True)
    assert plain["units"] < recomputed["units"] < 1.5 * plain["units"]


def test_the_time_model_charges_one_more_forward_of_the_blocks():
    """Toy parts (four blocks of 100..400 MACs, a head of 111): backprop trains 3M and, recomputing, forwards the
    blocks once more (1000 MACs, 10 s), never the head; fb_si's end-to-end stage recomputes only the blocks it
    trains (after its SI block); the evaluation is unchanged."""
    from bench.cost import method_costs

    W = method_costs.Work
    parts = {
        "total": 1111.0,
        "blocks": [[100, 1, 3], [200, 2, 5], [300, 3, 8], [400, 4, 9]],
        "head": [111, 1, 2],
        "out": [64, 32, 16, 8],
        "classes": 10,
    }
    cfg = {"epochs": 5, "method_options": {}}
    (plain,) = method_costs.phases("backprop", cfg, parts, 1000, False)
    (recomputed,) = method_costs.phases("backprop", cfg, parts, 1000, False, recompute=True)
    assert recomputed.train == plain.train + W(1000, 10) and recomputed.evaluate == plain.evaluate
    fb = {"epochs": 5, "method_options": {"si_layers": 1, "epochs_per_layer": 2}}
    fb_plain = method_costs.phases("fb_si", fb, parts, 1000, False)
    fb_recomputed = method_costs.phases("fb_si", fb, parts, 1000, False, recompute=True)
    assert fb_recomputed[0] == fb_plain[0]  # the SI stage trains its block on its own
    assert fb_recomputed[-1].train == fb_plain[-1].train + W(900, 9)


def test_the_plan_lists_the_jobs_that_recompute():
    from bench.cost.plan_report import memory_text

    job = {"paper": "karimi", "overflow": [], "device_bytes": 17e9, "host_bytes": 1e9, "disk_bytes": 1e8}
    jobs = [{**job, "experiment": "a", "recompute": True}, {**job, "experiment": "b", "recompute": False}]
    text, misfits = memory_text("paper", resources.PAPERS_NODE, jobs)
    assert not misfits and "1 recompute their blocks' activations" in text and "- a: device 17.0 GB" in text
    assert "- b:" not in text
