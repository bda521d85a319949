"""The whole training step compiled (config `compile_step`, bench.methods.training.compiled_step). For backprop, a
PredSim unit, a layer-wise stage and Learn & Drop's head, a few steps of a tiny model compiled follow the plain
steps from the same seed (losses to 1e-5 relative, the same parameters), learning-rate changes included, and the
compiled graphs really hold the backward and the optimizer's update.

Backend aot_eager in every test but one (dynamo's capture and AOTAutograd's tracing, which is where a step breaks,
without inductor's C++ code generation, slow on this CPU): the graphs checked are the ones inductor would get. The
one inductor case (slow) compiles a linear model's step for real."""

import dataclasses

import pytest
import torch
from helpers import cpu_context, separable
from test_method_greedy import cfg_for as greedy_cfg
from test_method_greedy import lenet as greedy_lenet
from torch._dynamo.backends.debugging import aot_eager

from bench.methods import backprop, greedy, predsim, training
from bench.methods import layerwise as lw
from bench.methods.learn_drop import loop
from bench.methods.learn_drop.layers import Chain
from bench.models import build_model

DATA = separable(32, 16, classes=4, size=16)  # two training batches of 16
IMAGES = separable(32, 16, classes=4, size=32)  # for VGG-11's five pools


@pytest.fixture(autouse=True)
def graphs(monkeypatch):
    """The FX graphs dynamo hands the compiled steps' backend (aot_eager behind a recorder); one thread (tiny models
    on a shared CPU); dynamo's caches dropped afterwards."""
    seen = []

    def recorder(gm, example_inputs):
        seen.append(gm)
        return aot_eager(gm, example_inputs)

    monkeypatch.setattr(training, "STEP_BACKEND", recorder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield seen
    torch.set_num_threads(threads)
    torch._dynamo.reset()


def cfg_for(compile_step: bool, epochs=2, optimizer="sgd", lr=0.05, **method_options) -> dict:
    """tests/test_method_greedy.py's config, its LR changed after the first epoch (the compiled optimizer step sees
    it) and evaluated in batches of 16."""
    cfg = greedy_cfg(lr=lr, optimizer=optimizer, epochs=epochs, **method_options)
    changed = {"eval_batch_size": 16, "lr_milestones": [1], "experiment": "test-compiled-step"}
    return {**cfg, **changed, "compile_step": compile_step}


def lenet():
    torch.manual_seed(0)
    return greedy_lenet()


def same_parameters(a: torch.nn.Module, b: torch.nn.Module):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p.double(), q.double(), rtol=1e-5, atol=1e-7), (name, (p - q).abs().max().item())


def nodes(gm) -> list:
    return [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")]


def forward_and_backward(gm) -> bool:
    """A graph with the forward's layers and the backward dynamo traced into it (torch.autograd.grad)."""
    targets = [n.target for n in nodes(gm)]
    forward = any(getattr(t, "__name__", "") in ("conv2d", "linear") for t in targets)
    return forward and torch.autograd.grad in targets


def compiled_backward(gm) -> bool:
    """A backward graph of compiled autograd: the backward's aten ops and the gradients accumulated into .grad."""
    targets = [str(n.target) for n in nodes(gm)]
    return any("convolution_backward" in t for t in targets) and any("AccumulateGrad" in t for t in targets)


def optimizer_update(gm) -> bool:
    """The optimizer's step: in-place updates from the param groups' gradients."""
    inputs = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    return any("param_groups" in name for name in inputs) and any(str(n.target).endswith("_") for n in nodes(gm))


def train_losses(method, cfg: dict) -> tuple[list, torch.nn.Module]:
    model, records = lenet(), []
    method.train(model, DATA, cfg, cpu_context(records))
    return [r["train_loss"] for r in records], model


def test_backprop_step_compiled_whole(graphs):
    """Backprop's step is two graphs: forward, loss and backward in one, the optimizer's update in the other (a
    graph of its own on purpose: torch.optim breaks the graph around step)."""
    plain, plain_model = train_losses(backprop, cfg_for(False))
    assert not graphs  # off: nothing compiled
    compiled, model = train_losses(backprop, cfg_for(True))
    assert compiled == pytest.approx(plain, rel=1e-5)
    same_parameters(model, plain_model)
    assert any(forward_and_backward(g) for g in graphs)
    assert any(optimizer_update(g) for g in graphs)


def test_layerwise_stage_step_compiled_whole(graphs):
    """A greedy layer-wise stage (block 0 and its temporary head) for two epochs, its LR decayed in place after the
    first (the compiled optimizer step recompiles once, the LR then an input)."""

    def stage_run(compile_step: bool):
        model, records = lenet(), []
        cfg = cfg_for(compile_step)
        opts = lw.options(cfg, "greedy_layerwise", {**greedy.DEFAULTS, "si_eval_samples": 0})
        run = lw.Run(model, DATA, cfg, cpu_context(records), opts)
        with lw.frozen_parameters(model):
            stage = greedy.block_stage(run, 0, opts, {}, {})
            lw.train_stage(run, dataclasses.replace(stage, epochs=2, milestones=(1,), gamma=0.2))
        return [r["train_loss"] for r in records], [r["lr"] for r in records], model

    plain, plain_lr, plain_model = stage_run(False)
    compiled, lr, model = stage_run(True)
    assert lr == plain_lr == [0.05, pytest.approx(0.01)]
    assert compiled == pytest.approx(plain, rel=1e-5)
    same_parameters(model, plain_model)
    assert any(forward_and_backward(g) for g in graphs)
    assert any(optimizer_update(g) for g in graphs)


def test_predsim_unit_step_compiled_whole(graphs):
    """PredSim's unit step (sequential stage 0: unit 0's forward, local loss, backward and Adam step). The step loops
    over the unit's optimizers, so compiled autograd compiles the backward (a traced backward would run eagerly)."""

    def unit_steps(compile_step: bool):
        torch.manual_seed(0)
        opts = {"nonlinearity": "leakyrelu", "bn": False, "head_pool": "flatten", "head_hidden": [32], "dropout": 0.0}
        model = build_model({"base": "vgg8b"}, 3, 4, 16, {**opts, "width_mult": 1 / 16})
        cfg = cfg_for(compile_step, optimizer="adam", lr=5e-4, schedule="sequential")  # PredSim's
        ps = predsim.PredSim(model, 4, cfg)
        predsim.compile_steps(ps, cfg, torch.device("cpu"))
        ps.stage_modes(0)
        x, y = DATA.x_train[:16].float() / 255, DATA.y_train[:16]
        losses = [ps.stage_step(0, x, y).output_loss.item() for _ in range(3)]
        return losses, model, ps.aux

    plain, plain_model, plain_aux = unit_steps(False)
    compiled, model, aux = unit_steps(True)
    assert compiled == pytest.approx(plain, rel=1e-5)
    same_parameters(model, plain_model)
    same_parameters(aux, plain_aux)
    assert any(compiled_backward(g) for g in graphs)
    assert any(optimizer_update(g) for g in graphs)


def test_learn_drop_head_step_compiled_whole(graphs):
    """Learn & Drop after a drop: the head trains on the dropped layers' maps, in a scoring epoch (the gradient sums
    take each step's gradients inside the compiled step, between backward and optimizer step)."""

    def head_steps(compile_step: bool):
        torch.manual_seed(0)
        opts = {"nonlinearity": "relu", "bn": True, "dropout": 0.0, "head_pool": "avg", "head_hidden": []}
        model = build_model({"base": "vgg11"}, 3, 4, 32, {**opts, "width_mult": 1 / 16})
        cfg = {**cfg_for(compile_step, warmup_epochs=1), "method": "learn_drop"}
        run = loop._Run(model, IMAGES, cfg, cpu_context(), "learn_drop")
        run.st.cut = cut = 6  # of 8 conv layers: the head is the last two and the classifier
        run.stop_training(run.layers[:cut])
        e = run.start_epoch(2)
        tail, head = Chain(run.steps[:cut]), run.head()
        losses = []
        for x, y in [*run.train_batches, *run.train_batches][:3]:
            with torch.no_grad():
                maps = tail(x)
            before = e.loss_sum.clone()
            run.step(e, head, maps, y)
            losses.append((e.loss_sum - before).item())
        return losses, model, e.grads

    plain, plain_model, plain_sums = head_steps(False)
    compiled, model, sums = head_steps(True)
    assert plain_sums is not None and compiled == pytest.approx(plain, rel=1e-5)
    same_parameters(model, plain_model)
    for s, t in zip(sums.sums + [sums.abs], plain_sums.sums + [plain_sums.abs]):
        assert torch.allclose(s, t, rtol=1e-5, atol=1e-8)
    assert any(forward_and_backward(g) for g in graphs)
    assert any(optimizer_update(g) for g in graphs)


@pytest.mark.slow
def test_inductor_compiles_the_whole_step(graphs, monkeypatch):
    """The one inductor case (C++ code generation: about 30 s on this CPU, 15 s with its cache warm): a linear
    model's step, forward, traced backward and SGD update compiled, follows the plain steps."""
    from torch._inductor.compile_fx import compile_fx

    def recorder(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    monkeypatch.setattr(training, "STEP_BACKEND", recorder)

    def steps(compile_step: bool):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        step = training.compiled_step(training.ce_step(model, opt), {"compile_step": compile_step})
        gen = torch.Generator().manual_seed(0)
        batches = [(torch.randn(6, 8, generator=gen), torch.randint(0, 4, (6,), generator=gen)) for _ in range(3)]
        return [step(x, y)[0].item() for x, y in batches], model

    plain, plain_model = steps(False)
    compiled, model = steps(True)
    assert compiled == pytest.approx(plain, rel=1e-5)
    same_parameters(model, plain_model)
    assert any(forward_and_backward(g) for g in graphs) and any(optimizer_update(g) for g in graphs)


def test_compile_step_is_off_unless_asked_and_checked_and_recorded():
    """No profile sets it (a GPU speed switch still to be measured); a profile or grid setting is checked by the
    schemas, said in the config's sources and resolved into the fast settings a run records."""
    from bench import BenchError, schema
    from bench import experiments as ex

    data = schema.load(ex.PROFILES_FILE)
    assert not any("compile_step" in prof for prof in data.values())
    data["paper"]["compile_step"] = True
    schema.check(data, "profiles", ex.PROFILES_FILE)
    data["paper"]["compile_step"] = "yes"
    with pytest.raises(BenchError, match="compile_step"):
        schema.check(data, "profiles", ex.PROFILES_FILE)
    cfg, sources = {}, {}
    ex._profile_run_settings(cfg, sources, {"compile_step": True}, "paper")
    assert cfg["compile_step"] is True and "compiled_step" in sources["compile_step"]
    cpu = torch.device("cpu")
    assert training.fast_settings({}, cpu)["compile_step"] is False
    assert training.fast_settings(cfg, cpu)["compile_step"] is True

    def step(x, y):
        return x

    assert training.compiled_step(step, training.fast_settings({}, cpu)) is step
