"""Layer-to-layer training (Bhyravabhottla & Lee, seed 002) as their notebook does it (docs/methods/layer-to-layer.md).

The paper calls the first layers a "student" and the last layers a "teacher", but the reference notebook
(ashish-AIML/LIII_lab `final_code.ipynb`) has no teacher/student loss and no distillation: it is staged
progressive freezing of one model. With the model's n layers in Keras `model.layers` order (parameter-free layers
counted), stage i = 0 .. n//2 - 1 trains only the layers with indices in [i, n-1-i] ("both_ends": one more layer
frozen at each end per stage); each stage re-compiles, i.e. a fresh optimizer (Adam, lr 1e-3, fresh moments)
over the window's parameters, and fits `epochs_per_stage` (10) epochs with cross-entropy, batch 128, no
augmentation, pixels / 255, the test set evaluated after every epoch (Keras' validation_data). Weights carry over
between stages. Stage 0 trains everything for `epochs_per_stage` epochs: it IS the standard run, and its end
metrics are returned as `standard_*`.

Layers (`keras_layers`): a BlockNet is flattened into the layers a Keras model of the same network would list:
  * nn.Sequential containers (whose forward is the plain sequential one) are opened, recursively, in forward order;
    any other module (DenseNet's DenseLayer, a ResNet/ResNeXt residual unit, ...) is ONE layer, like a custom Keras
    layer: its inside is a graph (concatenation, residual add), not a chain of layers;
  * nn.Identity (a switched-off BN or dropout) is no layer;
  * a Conv/Linear directly followed by its activation is one layer (Keras' Conv2D/Dense(activation='relu'));
    an activation after anything else (e.g. after BN) is its own Activation layer; BN is BatchNormalization;
  * AdaptiveAvgPool2d(1) followed by Flatten is one GlobalAveragePooling2D;
  * Flatten, MaxPool (MaxPooling2D), AvgPool (AveragePooling2D), Dropout, Dropout2d (SpatialDropout2D) are layers.
  Per model (the bhyravabhottla grid's options):
  * cnn12: exactly the notebook's 12 layers: conv1, conv2, pool1, dropout1, conv3, conv4, pool2, dropout2,
    flatten, fc1, dropout3, head (Dense K) -> 6 stages, trainable params (K=10) 2,168,362 / 2,162,336 /
    2,153,088 / 55,424 / 55,424 / 36,928.
  * vgg16 (no BN, no dropout, flatten head with two 4096 FC layers): 13 Conv2D(relu), 5 MaxPooling2D, Flatten,
    Dense 4096, Dense 4096, Dense K = 22 layers, the layers of keras.applications.VGG16 (include_top) without its
    InputLayer -> 11 stages.
  * resnext (the paper's description: 8 convs, each Conv -> BN -> ReLU, max-pool after each pair, GAP, FC):
    8 x (Conv2D, BatchNormalization, Activation) + 4 MaxPooling2D + GlobalAveragePooling2D + Dense = 30 layers
    -> 15 stages. (The resnext50_32x4d variant: stem leaves + one layer per residual unit + GAP + Dense.)
  * densenet (DenseNet-BC-100 with a conv-BN-ReLU stem): stem Conv2D, BatchNormalization, Activation; each of the
    48 DenseLayers one layer (BN-ReLU-conv1x1-BN-ReLU-conv3x3-concat: a Keras implementation would list 7 layers
    each, which would give ~350 layers and ~175 stages; one unit per bottleneck layer is the paper's own
    granularity, "dense blocks of bottleneck and conv layers"); each transition BatchNormalization, Activation,
    Conv2D, AveragePooling2D; head BatchNormalization, Activation, GlobalAveragePooling2D, Dense = 63 layers
    -> 31 stages.
  granularity "blocks" instead makes every BlockNet block one layer and the head one layer (cheaper: DenseNet 7
  layers / 3 stages); for cnn12 both give the same 12 layers.

Freezing mirrors Keras' `layer.trainable = False`: the frozen layers' parameters get requires_grad False and are
left out of the stage's optimizer (so they stay bit-identical), and, as Keras (TF2) runs a non-trainable
BatchNormalization in inference mode, frozen BN layers (also BNs inside a frozen composite layer) run in eval mode:
they normalize with, and do not update, their running statistics (`frozen_bn_eval: false` keeps them in training
mode, PyTorch's plain requires_grad freezing). Frozen dropout/pooling layers have no parameters: freezing them
changes nothing, as in Keras (frozen dropout still drops). A window without any parameters (possible for models
with runs of parameter-free layers) still runs its epochs forward-only, as Keras' fit would.

The notebook's "ensemble" averages the predictions of a list holding the SAME model object six times, so its
prediction is the final model's: `ensemble_test_accuracy` is the final test accuracy (no ensemble is built).

method_options (the grid sets epochs_per_stage and window):
  epochs_per_stage  epochs of each stage (notebook: 10; default cfg["epochs"], the standard run's epochs)
  stages            number of stages (notebook: len(layers) // 2); at most (n+1)//2 for both_ends, n for front
  window            "both_ends" (notebook: train [i, n-1-i]) | "front" (train [i, n-1]: freeze from the input side
                    only, a reading of the paper's prose "student = first layers"; not what the code does)
  granularity       "keras" (default, above) | "blocks"
  input_layer       false (default: a Sequential model with input_shape, as the notebook's, lists no InputLayer);
                    true counts a parameter-free InputLayer at index 0, as a functional Keras model
                    (keras.applications.VGG16) lists it; this shifts the windows by one at the input end
  frozen_bn_eval    true (default, Keras semantics) | false

Per-epoch records (ctx.log_epoch): epoch (global, 1-based over all stages), stage, stage_epoch, window_first,
window_last, trainable_params, lr, train_loss, train_accuracy, test_loss, test_accuracy, epoch_time_s,
eval_time_s. Final metrics: test_accuracy/test_error/test_loss (after the last stage), train_time_s (the training
epochs only), staged_wall_time_s (wall seconds around the whole staged loop: freezing, optimizer re-creation,
training and the per-epoch test evaluation Keras' fit does with validation_data; the paper's layer-to-layer time),
standard_test_accuracy/standard_test_loss/standard_train_time_s/standard_wall_time_s (stage 0, the standard run;
its wall time is the notebook's standard `fit` time, also with validation), ensemble_test_accuracy, num_layers,
num_stages, total_epochs, stage{i}_test_accuracy and stage{i}_trainable_params.

Resume (bench/methods/checkpoint.py): after every epoch the model, the stage and the epochs done in it, that stage's
optimizer and scheduler, the batches' generator, the times and the metrics so far are saved; a killed job skips the
stages it completed and goes on inside the stage it was in (window and trainable parameters rebuilt from the stage
index), ending with the records and metrics of an uninterrupted run. The wall times leave the checkpoint writes out;
a resumed job's are the killed job's (to its last checkpoint) plus its own.
"""

import math
import time
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bench.methods import Cost, Diverged
from bench.methods.training import (
    Context,
    EpochTimer,
    evaluate,
    make_optimizer,
    make_scheduler,
    sync,
    train_test_batches,
)

WINDOWS = ("both_ends", "front")
GRANULARITIES = ("keras", "blocks")
# method_options and their defaults; epochs_per_stage None: the run's epochs, stages None: half the Keras layers
DEFAULTS = {
    "epochs_per_stage": None,
    "stages": None,
    "window": "both_ends",
    "granularity": "keras",
    "input_layer": False,
    "frozen_bn_eval": True,
}
OPTIONS = set(DEFAULTS)
COST = Cost("layer_to_layer", parts="keras_layers", parts_options=("granularity", "input_layer"))


def stage_epochs(cfg: dict, n_blocks: int, n_layers: int | None = None, n_units: int | None = None) -> list[int]:
    """A stage of epochs_per_stage epochs (default: the run's) per window (option stages, default one per two of
    the model's n_layers Keras layers)."""
    opts = cfg.get("method_options") or {}
    stages = opts.get("stages") or (n_layers // 2 if n_layers else None)
    if not stages:
        raise ValueError("layer_to_layer sets no `stages` and the model's Keras layer count is not given")
    return [int(opts.get("epochs_per_stage", cfg["epochs"]))] * int(stages)


class KerasLayer(NamedTuple):
    """One entry of the Keras-style layer list: a name, its Keras class name, and the module(s) it is made of
    (an nn.Sequential wrapper, not registered in the model, when a conv/dense and its activation are merged)."""

    name: str
    kind: str
    module: nn.Module

    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


_MERGE_ACT = (nn.Conv1d, nn.Conv2d, nn.Linear)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)


def _kind(module: nn.Module) -> str:
    kinds = [
        (nn.Conv1d, "Conv1D"),
        (nn.Conv2d, "Conv2D"),
        (nn.Linear, "Dense"),
        (_BatchNorm, "BatchNormalization"),
        (nn.LeakyReLU, "LeakyReLU"),
        (nn.ReLU, "Activation"),
        (nn.MaxPool1d, "MaxPooling1D"),
        (nn.MaxPool2d, "MaxPooling2D"),
        (nn.AvgPool2d, "AveragePooling2D"),
        (nn.AdaptiveAvgPool2d, "AdaptiveAveragePooling2D"),
        (nn.AdaptiveMaxPool1d, "AdaptiveMaxPooling1D"),
        (nn.Flatten, "Flatten"),
        (nn.Dropout2d, "SpatialDropout2D"),
        (nn.Dropout, "Dropout"),
        (nn.Embedding, "Embedding"),
    ]
    for cls, name in kinds:
        if isinstance(module, cls):
            return name
    return type(module).__name__


def _is_chain(module: nn.Module) -> bool:
    """An nn.Sequential whose forward is the plain chain (a subclass overriding forward is one layer)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _leaves(module: nn.Module) -> list[nn.Module]:
    if _is_chain(module):
        return [leaf for child in module for leaf in _leaves(child)]
    return [] if isinstance(module, nn.Identity) else [module]


def _is_gap(module: nn.Module) -> bool:
    return isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1))


def _keras_parts(modules: list[nn.Module]) -> list[tuple[str, list[nn.Module]]]:
    """Group one owner's leaves into Keras layers: (kind, modules)."""
    out, i = [], 0
    while i < len(modules):
        m, nxt = modules[i], modules[i + 1] if i + 1 < len(modules) else None
        if isinstance(m, _MERGE_ACT) and isinstance(nxt, _ACTIVATIONS):
            out.append((_kind(m), [m, nxt]))
            i += 2
        elif _is_gap(m) and isinstance(nxt, nn.Flatten):
            out.append(("GlobalAveragePooling2D", [m, nxt]))
            i += 2
        else:
            out.append((_kind(m), [m]))
            i += 1
    return out


def keras_layers(model: nn.Module, granularity: str = "keras", input_layer: bool = False) -> list[KerasLayer]:
    """The BlockNet's layers in Keras `model.layers` order, parameter-free layers included (module docstring).

    Layer names: the block's name (model.block_names, "head" for the head) when the block is one layer, else
    "<block>.<j>". Every parameter of the model belongs to exactly one layer (checked)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity '{granularity}' ({', '.join(GRANULARITIES)})")
    owners = list(zip(model.block_names, model.blocks)) + [("head", model.head)]
    layers = [KerasLayer("input", "InputLayer", nn.Identity())] if input_layer else []
    for owner, block in owners:
        if granularity == "blocks":
            parts = [(_kind(block) if not _is_chain(block) else "Block", [block])]
        else:
            # merge across the whole chain of one owner (the head of a DenseNet nests its classifier)
            parts = _keras_parts(_leaves(block))
        for j, (kind, mods) in enumerate(parts):
            name = owner if len(parts) == 1 else f"{owner}.{j}"
            layers.append(KerasLayer(name, kind, mods[0] if len(mods) == 1 else nn.Sequential(*mods)))
    seen = [id(p) for layer in layers for p in layer.module.parameters()]
    if len(seen) != len(set(seen)) or set(seen) != {id(p) for p in model.parameters()}:
        raise ValueError("keras_layers: the layers do not partition the model's parameters")
    return layers


def stage_windows(num_layers: int, stages: int | None = None, window: str = "both_ends") -> list[tuple[int, int]]:
    """[(first, last)] trainable layer indices (inclusive) per stage; default stages = num_layers // 2."""
    if window not in WINDOWS:
        raise ValueError(f"unknown layer_to_layer window '{window}' ({', '.join(WINDOWS)})")
    stages = num_layers // 2 if stages is None else int(stages)
    most = (num_layers + 1) // 2 if window == "both_ends" else num_layers
    if not 1 <= stages <= most:
        raise ValueError(
            f"layer_to_layer: {stages} stages for {num_layers} layers with window '{window}' "
            f"(1 to {most} give non-empty windows)"
        )
    return [(i, num_layers - 1 - i) if window == "both_ends" else (i, num_layers - 1) for i in range(stages)]


def set_window(layers: list[KerasLayer], first: int, last: int) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """Freeze every layer outside [first, last] (requires_grad False), unfreeze those inside; returns the window's
    parameters (in layer order) and the BatchNorm modules of the frozen layers."""
    params, frozen_bns = [], []
    for j, layer in enumerate(layers):
        inside = first <= j <= last
        for p in layer.module.parameters():
            p.requires_grad_(inside)
            if inside:
                params.append(p)
        if not inside:
            frozen_bns += [m for m in layer.module.modules() if isinstance(m, _BatchNorm)]
    return params, frozen_bns


def options(cfg: dict) -> dict:
    opts = dict(cfg.get("method_options") or {})
    unknown = set(opts) - OPTIONS
    if unknown:
        raise ValueError(f"unknown layer_to_layer method_options {sorted(unknown)} (known: {sorted(OPTIONS)})")
    out = {
        "epochs_per_stage": int(opts.get("epochs_per_stage", cfg["epochs"])),
        "stages": opts.get("stages"),
        "window": opts.get("window", DEFAULTS["window"]),
        "granularity": opts.get("granularity", DEFAULTS["granularity"]),
        "input_layer": bool(opts.get("input_layer", DEFAULTS["input_layer"])),
        "frozen_bn_eval": bool(opts.get("frozen_bn_eval", DEFAULTS["frozen_bn_eval"])),
    }
    if out["epochs_per_stage"] < 1:
        raise ValueError(f"layer_to_layer: epochs_per_stage must be >= 1, got {out['epochs_per_stage']}")
    return out


class Training(NamedTuple):
    """What every stage of a run shares: the model, the config and options, the context and the batches."""

    model: nn.Module
    cfg: dict
    opts: dict
    ctx: Context
    train_batches: object
    test_batches: object
    n: int  # training samples


class Stage(NamedTuple):
    """One stage: its index, its window [first, last] of trainable layers, what it trains with and what its
    checkpoints hold (`state`)."""

    index: int
    first: int
    last: int
    trainable: int
    frozen_bns: list[nn.Module]
    optimizer: torch.optim.Optimizer | None
    scheduler: object
    state: dict


def fresh_progress() -> dict:
    """What the loop carries, saved in every per-epoch checkpoint (bench/methods/checkpoint.py): the stage and the
    epochs done in it, the training time and staged wall time so far, the last test metrics and the per-stage final
    metrics."""
    return {
        "stage": 0,
        "stage_epoch": 0,
        "train_time": 0.0,
        "wall": 0.0,
        "test_loss": math.nan,
        "test_acc": math.nan,
        "final": {},
    }


def build_stage(run: Training, layers: list[KerasLayer], index: int, window: tuple[int, int]) -> Stage:
    """Freeze the layers outside the stage's window and make the window's optimizer and scheduler."""
    first, last = window
    params, frozen_bns = set_window(layers, first, last)  # trainable parameters follow from the stage
    trainable = sum(p.numel() for p in params)
    # Keras re-compiles: a fresh optimizer (fresh Adam moments) over the window only
    optimizer = make_optimizer(params, run.cfg) if params else None
    scheduler = make_scheduler(optimizer, run.cfg) if optimizer is not None else None
    state = {"model": run.model, "batches": run.train_batches.gen}
    if optimizer is not None:
        state.update(optimizer=optimizer, scheduler=scheduler)
    return Stage(index, first, last, trainable, frozen_bns, optimizer, scheduler, state)


def train_epoch(run: Training, stage: Stage, epoch: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """One pass over the training batches with the stage's window (frozen BNs in eval mode unless
    frozen_bn_eval is off); (summed loss, correct predictions, the epoch's learning rate, training seconds)."""
    device, model, optimizer = run.ctx.device, run.model, stage.optimizer
    model.train()
    if run.opts["frozen_bn_eval"]:
        for bn in stage.frozen_bns:
            bn.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    lr = optimizer.param_groups[0]["lr"] if optimizer is not None else 0.0
    with EpochTimer(device) as timer:
        for x, y in run.ctx.bar(run.train_batches, desc=f"epoch {epoch}", unit="batch"):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        if stage.scheduler is not None:
            stage.scheduler.step()
    return loss_sum, correct, lr, timer.seconds


def run_epoch(run: Training, stage: Stage, epoch: int, stage_epoch: int) -> tuple[float, float, float]:
    """Train one epoch, evaluate the test set (Keras' validation_data), log the epoch's record and stop on a
    diverged loss; (training seconds, test loss, test accuracy)."""
    loss_sum, correct, lr, seconds = train_epoch(run, stage, epoch)
    with EpochTimer(run.ctx.device) as eval_timer:
        test_loss, test_acc = evaluate(run.model, run.test_batches, run.ctx.device)
    train_loss = loss_sum.item() / run.n
    run.ctx.log_epoch(
        {
            "epoch": epoch,
            "stage": float(stage.index),
            "stage_epoch": float(stage_epoch + 1),
            "window_first": float(stage.first),
            "window_last": float(stage.last),
            "trainable_params": float(stage.trainable),
            "lr": float(lr),
            "train_loss": train_loss,
            "train_accuracy": 100.0 * correct.item() / run.n,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "epoch_time_s": seconds,
            "eval_time_s": eval_timer.seconds,
        }
    )
    if not math.isfinite(train_loss):
        raise Diverged(epoch, f"stage {stage.index}: train loss {train_loss}")
    return seconds, test_loss, test_acc


def record_stage_end(done: dict, stage: Stage):
    """The stage's final metrics; stage 0 trains every layer, so its end is the standard run's."""
    final = done["final"]
    final[f"stage{stage.index}_test_accuracy"] = done["test_acc"]
    final[f"stage{stage.index}_trainable_params"] = float(stage.trainable)
    if stage.index == 0:
        final.update(
            {
                "standard_test_accuracy": done["test_acc"],
                "standard_test_loss": done["test_loss"],
                "standard_train_time_s": done["train_time"],
                "standard_wall_time_s": done["wall"],
            }
        )


def train_stage(run: Training, stage: Stage, num_stages: int, done: dict, epoch: int, mark: float):
    """The stage's epochs from done["stage_epoch"] on, each checkpointed; the staged wall time runs from `mark` to
    the end of each epoch (the checkpoint writes left out). Returns the run's epochs so far and the new mark."""
    epochs_per_stage = run.opts["epochs_per_stage"]
    desc = f"{run.cfg['experiment']} stage {stage.index + 1}/{num_stages}"
    for stage_epoch in run.ctx.bar(range(done["stage_epoch"], epochs_per_stage), desc=desc, unit="epoch"):
        epoch += 1
        seconds, test_loss, test_acc = run_epoch(run, stage, epoch, stage_epoch)
        sync(run.ctx.device)
        done.update(
            stage=stage.index,
            stage_epoch=stage_epoch + 1,
            train_time=done["train_time"] + seconds,
            wall=done["wall"] + time.perf_counter() - mark,
            test_loss=test_loss,
            test_acc=test_acc,
        )
        if stage_epoch + 1 == epochs_per_stage:  # the stage's end
            record_stage_end(done, stage)
        run.ctx.epoch_done(epoch, stage.state, done)
        mark = time.perf_counter()
    return epoch, mark


def final_metrics(done: dict, num_layers: int, num_stages: int, epochs: int) -> dict:
    test_acc = done["test_acc"]
    return {
        "test_accuracy": test_acc,
        "test_error": 100.0 - test_acc,
        "test_loss": done["test_loss"],
        "train_time_s": done["train_time"],
        "staged_wall_time_s": done["wall"],
        "ensemble_test_accuracy": test_acc,
        "num_layers": float(num_layers),
        "num_stages": float(num_stages),
        "total_epochs": float(epochs),
        **done["final"],
    }


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    opts = options(cfg)
    layers = keras_layers(model, opts["granularity"], opts["input_layer"])
    windows = stage_windows(len(layers), opts["stages"], opts["window"])
    train_batches, test_batches = train_test_batches(data, cfg, ctx.device, ctx.seed)
    run = Training(model, cfg, opts, ctx, train_batches, test_batches, len(data.y_train))
    original = {p: p.requires_grad for p in model.parameters()}
    done = fresh_progress()
    # a killed run resumes in the stage it was in: the stages before it are skipped (the checkpoint's model holds
    # their weights), and that stage's window, optimizer and scheduler are rebuilt before their states are restored
    saved = ctx.saved()
    epoch = 0
    # the first optimizer of a process imports torch._dynamo (about 1 s on CPU): a one-time cost that backprop's
    # timers never see, so pay it here, before the staged wall clock starts
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    # staged wall time (freezing, optimizer re-creation, training, the per-epoch test evaluation) is summed in
    # done["wall"] epoch by epoch, from `mark` to the end of the epoch; the checkpoint writes and reads are left out
    mark = time.perf_counter()
    try:
        for index, window in enumerate(windows):
            if saved and index < saved["stage"]:
                continue
            stage = build_stage(run, layers, index, window)
            if saved and index == saved["stage"]:
                epoch = ctx.resume(stage.state, done)
                # resumed: the staged wall time is the killed process's (done["wall"], up to its last checkpoint)
                # plus this process's from here on
                mark = time.perf_counter()
            else:
                done["stage_epoch"] = 0
            epoch, mark = train_stage(run, stage, len(windows), done, epoch, mark)
    finally:
        for p, flag in original.items():
            p.requires_grad_(flag)
    return final_metrics(done, len(layers), len(windows), epoch)
