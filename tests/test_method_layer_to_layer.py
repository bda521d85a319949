"""Layer-to-layer training (Bhyravabhottla & Lee, docs/methods/layer-to-layer.md): the Keras layer list, the stage
windows, what
each stage may and may not change, and that the staged run trains."""

import copy

import pytest
import torch
from helpers import separable
from torch import nn

from bench.methods import Diverged, backprop
from bench.methods import layer_to_layer as l2l
from bench.methods.training import Context
from bench.models import build_model
from bench.models.common import BlockNet

GRID_MODEL = {  # the bhyravabhottla grid's model options per network
    "cnn12": {"nonlinearity": "relu", "bn": False, "dropout": 0.0},
    "vgg16": {
        "nonlinearity": "relu",
        "bn": False,
        "dropout": 0.0,
        "conv_bias": True,
        "head_pool": "flatten",
        "head_hidden": [4096, 4096],
        "head_dropout": 0.0,
    },
    "resnext": {"nonlinearity": "relu", "bn": True, "dropout": 0.0},
    "densenet": {"nonlinearity": "relu", "bn": True, "dropout": 0.0},
}
TINY = 1 / 16


def build(base, num_classes=10, size=32, **opts):
    return build_model({"base": base}, 3, num_classes, size, {**GRID_MODEL[base], **opts})


def cfg_for(epochs=1, batch_size=16, **method_options):
    return {
        "epochs": epochs,
        "lr": 1e-3,
        "optimizer": "adam",
        "batch_size": batch_size,
        "lr_milestones": [],
        "weight_decay": 0.0,
        "normalize": {"mean": [0.0] * 3, "std": [1.0] * 3},
        "augment": {"crop_padding": 0, "hflip": False},
        "experiment": "test-l2l",
        "method_options": method_options,
    }


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- layer list and windows

NOTEBOOK = [
    ("conv1", "Conv2D", 896),
    ("conv2", "Conv2D", 9248),
    ("pool1", "MaxPooling2D", 0),
    ("dropout1", "Dropout", 0),
    ("conv3", "Conv2D", 18496),
    ("conv4", "Conv2D", 36928),
    ("pool2", "MaxPooling2D", 0),
    ("dropout2", "Dropout", 0),
    ("flatten", "Flatten", 0),
    ("fc1", "Dense", 2097664),
    ("dropout3", "Dropout", 0),
    ("head", "Dense", 5130),
]


def test_cnn12_is_the_notebooks_12_layers_and_stage_counts():
    model = build("cnn12")  # full width, K = 10
    layers = l2l.keras_layers(model)
    assert [(layer.name, layer.kind, layer.num_params()) for layer in layers] == NOTEBOOK
    windows = l2l.stage_windows(len(layers))
    assert windows == [(0, 11), (1, 10), (2, 9), (3, 8), (4, 7), (5, 6)]
    counts = [sum(layer.num_params() for layer in layers[a : b + 1]) for a, b in windows]
    assert counts == [2_168_362, 2_162_336, 2_153_088, 55_424, 55_424, 36_928]  # docs/methods/layer-to-layer.md
    assert sum(layer.num_params() for layer in l2l.keras_layers(build("cnn12", 100))) == 2_214_532
    # block granularity: the same 12 layers for cnn12
    assert [layer.name for layer in l2l.keras_layers(model, "blocks")] == [name for name, _, _ in NOTEBOOK]


def test_other_models_layer_lists():
    kinds = lambda layers: [layer.kind for layer in layers]  # noqa: E731
    vgg = kinds(l2l.keras_layers(build("vgg16", 100, width_mult=TINY)))
    # keras.applications.VGG16 without its InputLayer: 2 conv, pool, 2 conv, pool, 3x(3 conv, pool), flatten, 3 dense
    stage = lambda convs: ["Conv2D"] * convs + ["MaxPooling2D"]  # noqa: E731
    assert vgg == stage(2) + stage(2) + stage(3) * 3 + ["Flatten", "Dense", "Dense", "Dense"]
    rx = kinds(l2l.keras_layers(build("resnext", 100, width_mult=TINY)))
    cbr = ["Conv2D", "BatchNormalization", "Activation"]
    assert rx == (cbr * 2 + ["MaxPooling2D"]) * 4 + ["GlobalAveragePooling2D", "Dense"]
    dn_model = build("densenet", 100, width_mult=TINY)
    dn = kinds(l2l.keras_layers(dn_model))
    trans = ["BatchNormalization", "Activation", "Conv2D", "AveragePooling2D"]
    assert dn == (
        cbr
        + ["DenseLayer"] * 16
        + trans
        + ["DenseLayer"] * 16
        + trans
        + ["DenseLayer"] * 16
        + ["BatchNormalization", "Activation", "GlobalAveragePooling2D", "Dense"]
    )
    assert len(l2l.stage_windows(len(dn))) == 31
    assert len(l2l.keras_layers(dn_model, "blocks")) == 7
    with_input = l2l.keras_layers(dn_model, input_layer=True)
    assert with_input[0].kind == "InputLayer" and len(with_input) == 64


def test_windows_and_options():
    assert l2l.stage_windows(12, window="front") == [(i, 11) for i in range(6)]
    assert l2l.stage_windows(12, stages=2) == [(0, 11), (1, 10)]
    assert l2l.stage_windows(5) == [(0, 4), (1, 3)] and l2l.stage_windows(5, 3) == [(0, 4), (1, 3), (2, 2)]
    for bad in ({"stages": 7}, {"stages": 0}, {"window": "middle"}):
        with pytest.raises(ValueError):
            l2l.stage_windows(12, **bad)
    with pytest.raises(ValueError, match="unknown"):
        l2l.options(cfg_for(epochs_per_stag=3))
    with pytest.raises(ValueError, match="granularity"):
        l2l.keras_layers(build("cnn12", width_mult=TINY), "leaves")
    assert l2l.options(cfg_for(epochs=4))["epochs_per_stage"] == 4  # default: the standard run's epochs


# ---------------------------------------------------------------- what a stage changes


class Recorder:
    """Wraps make_optimizer: records each stage's optimizer, whether its state started empty, and the model's
    weights when the stage starts."""

    def __init__(self, model, monkeypatch):
        self.model, self.optimizers, self.fresh, self.starts = model, [], [], []
        real = l2l.make_optimizer

        def make(params, cfg):
            opt = real(params, cfg)
            self.optimizers.append(opt)
            self.fresh.append(len(opt.state) == 0)
            self.starts.append(snapshot(model))
            return opt

        monkeypatch.setattr(l2l, "make_optimizer", make)


@pytest.mark.parametrize("base", ["cnn12", "resnext"])
def test_stage_changes_only_its_window(base, monkeypatch):
    torch.manual_seed(0)
    model = build(base, 4, width_mult=TINY)
    data = separable(size=32)
    rec = Recorder(model, monkeypatch)
    ends, records = [], []

    def log(record):
        records.append(record)
        ends.append(snapshot(model))

    result = l2l.train(model, data, cfg_for(epochs_per_stage=1), Context(torch.device("cpu"), 0, log))
    layers = l2l.keras_layers(model)
    windows = l2l.stage_windows(len(layers))
    assert len(rec.optimizers) == len(windows) == len(ends) == result["num_stages"]
    assert all(rec.fresh) and len({id(o) for o in rec.optimizers}) == len(windows)
    names = {id(p): name for name, p in model.named_parameters()}
    keys = {id(t): key for key, t in model.state_dict(keep_vars=True).items()}
    owner = {}  # state_dict key -> layer index (parameters and BN buffers)
    for j, layer in enumerate(layers):
        for m in layer.module.modules():
            for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
                owner[keys[id(t)]] = j
    assert set(owner) == set(keys.values())
    for stage, (first, last) in enumerate(windows):
        window_params = [p for layer in layers[first : last + 1] for p in layer.module.parameters()]
        opt_params = [p for group in rec.optimizers[stage].param_groups for p in group["params"]]
        assert {id(p) for p in opt_params} == {id(p) for p in window_params}, f"stage {stage}"
        assert set(rec.optimizers[stage].state) <= set(opt_params)  # no state of other stages' parameters
        assert records[stage]["trainable_params"] == sum(p.numel() for p in window_params)
        if stage:  # weights carry over: the stage starts from the previous stage's end
            assert all(torch.equal(rec.starts[stage][k], ends[stage - 1][k]) for k in ends[stage - 1])
        before, after = rec.starts[stage], ends[stage]
        for key, j in owner.items():
            if not first <= j <= last:  # frozen: parameters and (frozen BN in eval mode) running stats untouched
                assert torch.equal(before[key], after[key]), f"stage {stage}: frozen {key} changed"
        changed = [names[id(p)] for p in window_params if not torch.equal(before[names[id(p)]], after[names[id(p)]])]
        assert changed, f"stage {stage}: nothing in the window was trained"
    # requires_grad is restored after the run
    assert all(p.requires_grad for p in model.parameters())


def test_stage0_is_the_standard_run():
    data = separable(size=32)
    torch.manual_seed(1)
    model = build("cnn12", 4, width_mult=TINY)
    twin = copy.deepcopy(model)
    records = []
    torch.manual_seed(2)
    result = l2l.train(
        model, data, cfg_for(epochs_per_stage=2, stages=2), Context(torch.device("cpu"), 3, records.append)
    )
    stage0 = [r for r in records if r["stage"] == 0]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and len(stage0) == 2
    assert result["standard_test_accuracy"] == stage0[-1]["test_accuracy"] == result["stage0_test_accuracy"]
    assert result["test_accuracy"] == records[-1]["test_accuracy"] == result["ensemble_test_accuracy"]
    assert result["standard_train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in stage0))
    assert result["train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in records))
    assert result["staged_wall_time_s"] >= result["train_time_s"]
    assert result["staged_wall_time_s"] >= result["standard_wall_time_s"] >= result["standard_train_time_s"]
    # plain backprop for the same epochs from the same weights, seed and dropout stream gives the same run
    torch.manual_seed(2)
    plain = backprop.train(twin, data, cfg_for(epochs=2), Context(torch.device("cpu"), 3))
    assert plain["test_accuracy"] == result["standard_test_accuracy"]
    assert plain["test_loss"] == pytest.approx(result["standard_test_loss"], rel=1e-6)


def test_parameter_free_window_and_front_window():
    torch.manual_seed(0)
    # 5 layers: conv(relu), pool, dropout, flatten, dense -> stage 1 window [1, 3] has no parameters
    model = BlockNet(
        [nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), nn.MaxPool2d(2), nn.Dropout(0.1), nn.Flatten()],
        nn.Linear(4 * 16 * 16, 4),
        (3, 32, 32),
        4,
    )
    ends = []
    start = snapshot(model)
    records = []

    def log(record):
        records.append(record)
        ends.append(snapshot(model))

    l2l.train(model, separable(size=32), cfg_for(epochs_per_stage=1, stages=3), Context(torch.device("cpu"), 0, log))
    assert [r["trainable_params"] for r in records] == [4212, 0, 0]  # conv 112 + dense 4100
    assert not torch.equal(start["head.weight"], ends[0]["head.weight"])
    assert all(torch.equal(ends[0][k], ends[i][k]) for k in start for i in (1, 2))  # forward-only stages
    records.clear()
    model2 = BlockNet(
        [nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), nn.MaxPool2d(2), nn.Flatten()],
        nn.Linear(4 * 16 * 16, 4),
        (3, 32, 32),
        4,
    )
    result = l2l.train(
        model2,
        separable(size=32),
        cfg_for(epochs_per_stage=1, window="front", stages=4),
        Context(torch.device("cpu"), 0, records.append),
    )
    assert [r["window_last"] for r in records] == [3.0] * 4
    assert [r["trainable_params"] for r in records] == [4212, 4100, 4100, 4100]
    assert result["stage3_trainable_params"] == 4100


def test_divergence_is_reported(monkeypatch):
    model = build("cnn12", 4, width_mult=TINY)
    real = l2l.make_optimizer
    monkeypatch.setattr(l2l, "make_optimizer", lambda params, cfg: real(params, {**cfg, "lr": 1e30}))
    with pytest.raises(Diverged):
        l2l.train(model, separable(size=32), cfg_for(epochs_per_stage=3, stages=1), Context(torch.device("cpu"), 0))


# ---------------------------------------------------------------- it runs and it learns


@pytest.mark.parametrize("base,size", [("vgg16", 32), ("resnext", 16), ("densenet", 8)])
def test_other_models_staged_run(base, size):
    torch.manual_seed(0)
    model = build(base, 4, size, width_mult=TINY)
    records = []
    result = l2l.train(
        model,
        separable(16, 8, size=size),
        cfg_for(epochs_per_stage=1, batch_size=8),
        Context(torch.device("cpu"), 0, records.append),
    )
    stages = len(l2l.keras_layers(model)) // 2
    assert result["num_stages"] == stages == len(records) and records[-1]["epoch"] == stages
    assert all(f"stage{i}_test_accuracy" in result for i in range(stages))
    assert all(isinstance(v, float) for v in result.values())


def test_learns_a_separable_set():
    torch.manual_seed(0)
    model = build("cnn12", 4, width_mult=0.25)
    data = separable(96, 48, size=32)
    result = l2l.train(
        model, data, cfg_for(epochs_per_stage=3, batch_size=16, stages=3), Context(torch.device("cpu"), 0)
    )
    assert result["test_accuracy"] >= 75.0  # chance: 25 %
