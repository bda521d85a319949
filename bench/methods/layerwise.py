"""What the sequential layer-wise methods share (si_forward, fb_si, greedy_layerwise, belilovsky_greedy).

"Sequential layer-wise" (docs/methods/cross-paper.md): the BlockNet's blocks are trained one after the other; while
block L
trains, blocks < L are frozen and blocks > L (and, unless the stage says otherwise, the head) are not used at all.

Freezing (`freeze`): requires_grad False and eval mode (BN normalises with its running statistics and does not
update them, dropout is off), as Belilovsky's code does (`blocks[k].eval()` for k < n). Nothing here calls
`model.train()`: at the start of every epoch only the stage's trained modules are put in training mode, so the
frozen ones stay in eval mode for the whole run.

The frozen prefix (`StageFeatures`): the features of blocks < j are computed under `torch.no_grad()`, so no graph
is built through them and no gradient can reach them. Option `cache_prefix` (default true): without augmentation
the prefix is a fixed function of each training sample, so its features for the whole training set are computed
once per stage (in the run's order, in chunks of the training batch size) and each epoch's shuffled batches are
gathered from that cache. The shuffle is the one `bench.data.loader.Batches` draws (torch.randperm from the run's
seeded generator, first thing in every epoch), so cached and recomputed runs visit the same samples in the same
order and, on CPU in fp32, give bit-identical weights (tests/test_method_si.py). With augmentation on, a cached
feature would be that of the un-augmented image, so the training features are recomputed for every batch
(`prefix_cache` code 2, "not exact"). Test features (never augmented) are cached whenever cache_prefix is on. The
caches of a stage live on the training device and must fit in `prefix_cache_max_mb` together (train first, then
test); a cache that does not fit is not built (code 3, the features are recomputed). Caches are freed at the end
of their stage.

prefix_cache codes (per-epoch record `prefix_cache`, the stage's training features): 0 off (option off, or stage
without prefix), 1 cached, 2 not exact (augmentation on: recomputed), 3 too large (recomputed). Final metric
`prefix_cache`: 0 option off, 1 every stage with a prefix cached its training features, 2 not exact, 3 on but at
least one stage too large; `prefix_cached_stages` counts the stages whose training features were cached.

Timing: `prefix_time_s` (per epoch and in total) is the time spent computing the frozen prefix's training
features (per batch when recomputed: CUDA events on a GPU, so the loop never waits for the device; the cache
build when cached). `prefix_cache_saved_s` estimates what the caches saved: for every cache, its build time times
(number of passes over it - 1), i.e. assuming a recomputation costs what the build cost.

`train_stage` is the per-stage loop: a fresh optimizer over the stage's parameters only (`new_optimizer`, from
the config's optimizer, momentum and weight decay), an optional step schedule (milestones in stage epochs, either
changing the LR in place or, Belilovsky's way, creating a fresh optimizer at each decay), per-batch statistics
accumulated on the device and read once per epoch, `Diverged` when the epoch's loss is not finite, and one record
per epoch (`ctx.log_epoch`) with a global 1-based epoch counter over all stages.

Resume (bench/methods/checkpoint.py): `train_stage` checkpoints after every epoch the model, the stage's modules outside
the model (temporary and aux heads), its optimizer, the training batches' generator, the method's registered
objects (`Run.objects`), and as plain values the stage index and stage epochs done, the LR, the last record, the
Run's counters and totals (`RUN_STATE`) and the method's own state registered with `Run.keep` (SI values, head
accuracies, ...). A restarted run reads where it stopped first (`Run.saved`); the method skips the stages finished
before (`Run.skip`: their parameters come with the checkpointed model, their frozen flags and eval modes are set
again by the later stages, the caches are rebuilt from the model), builds the stage it was in as usual, and
`train_stage` loads the checkpoint into it and goes on with its next epoch (none if the kill came after the
stage's last epoch: then only what follows the stage runs). The global RNG states come back with the checkpoint,
so stages built after it (a temporary head's initialisation) are identical. Times sum the checkpointed epochs' and
the resumed ones' (the killed partial epoch is lost; a rebuilt cache is paid again in the first resumed epoch;
`prefix_cache_saved_s` counts the passes over a cache of the process that built it).
"""

import math
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from bench.data.loader import Batches, augments
from bench.methods import Diverged, merge_options
from bench.methods.training import (
    Context,
    EpochTimer,
    SpanTimer,
    compiled_step,
    fast_settings,
    make_optimizer,
    unique_parameters,
)

CACHE_OFF, CACHE_ON, CACHE_NOT_EXACT, CACHE_TOO_LARGE = 0, 1, 2, 3
# a non-finite value of any of these in an epoch record stops the run (Diverged); feature_norm too, because
# the SI loss skips anchors whose distances are not finite, so exploded features can leave a finite loss
DIVERGENCE_KEYS = ("train_loss", "train_loss_mean", "feature_norm")
COMMON_DEFAULTS = {"cache_prefix": True, "prefix_cache_max_mb": 8192}
# the Run's attributes saved with every checkpoint (the global epoch counter, totals and counters)
RUN_STATE = ("epoch", "train_time", "prefix_time", "cache_saved", "cache_codes", "optimizers_created")


def options(cfg: dict, method: str, defaults: dict) -> dict:
    """method_options merged over `defaults` (plus the shared cache options); unknown keys are an error."""
    out = merge_options(cfg, {**COMMON_DEFAULTS, **defaults}, method)
    out["cache_prefix"] = bool(out["cache_prefix"])
    out["prefix_cache_max_mb"] = float(out["prefix_cache_max_mb"])
    return out


def positive_int(opts: dict, key: str, method: str, minimum: int = 1) -> int:
    value = int(opts[key])
    if value < minimum:
        raise ValueError(f"{method}: {key} must be >= {minimum}, got {opts[key]}")
    return value


def freeze(module: nn.Module) -> nn.Module:
    """requires_grad False on every parameter and eval mode (BN uses and keeps its running statistics)."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    return module


def parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    return unique_parameters(modules)


def new_optimizer(params: list[nn.Parameter], cfg: dict, lr: float) -> torch.optim.Optimizer:
    """A fresh optimizer of the config's kind over `params` only, at learning rate `lr`."""
    return make_optimizer(params, {**cfg, "lr": lr})


def forward_from(model: nn.Module, first: int, x: torch.Tensor) -> torch.Tensor:
    """The model's output given the features after blocks < first (BlockNet.run_blocks: the end-to-end stages
    recompute their blocks' activations where the run says so)."""
    return model.head(model.run_blocks(x, first))


class Run:
    """State of one layer-wise run shared by its stages: data batches, global epoch counter, timers, totals."""

    def __init__(self, model: nn.Module, data, cfg: dict, ctx: Context, opts: dict):
        self.model, self.data, self.cfg, self.ctx, self.opts = model, data, cfg, ctx, opts
        self.device = ctx.device
        self.text = data.x_train.ndim == 2
        norm = cfg.get("normalize") or {}
        self.mean, self.std = norm.get("mean"), norm.get("std")
        augment = dict(cfg.get("augment") or {})
        self.augmented = not self.text and augments(augment)
        self.train_batches = Batches(
            data.x_train,
            data.y_train,
            cfg["batch_size"],
            device=self.device,
            mean=self.mean,
            std=self.std,
            augment=augment,
            shuffle=True,
            seed=ctx.seed,
            random_draws=cfg.get("random_draws", "per_batch"),
        )
        self.eval_batch_size = cfg.get("eval_batch_size", 512)
        self.test_batches = Batches(
            data.x_test, data.y_test, self.eval_batch_size, device=self.device, mean=self.mean, std=self.std
        )
        self.epoch = 0
        self.train_time = 0.0
        self.prefix_time = 0.0
        self.cache_saved = 0.0
        self.cache_codes: list[int] = []  # training-feature cache code of every stage with a prefix
        self.optimizers_created = 0
        self.timer = SpanTimer(self.device)
        # the first optimizer of a process imports torch._dynamo (about 1 s on CPU); pay it before any timer
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
        self.saved = ctx.saved()  # a killed run's checkpoint values ({"stage": ..., ...}) until resumed, or None
        self.kept: dict = {}  # the method's plain state (Run.keep), saved with every checkpoint
        self.objects: dict = {}  # the method's objects outside the model that outlive a stage, saved likewise

    def keep(self, name: str, container: dict | list) -> dict | list:
        """Register a dict or list of the method's own plain state (SI values, test logits, ...): saved with every
        checkpoint, refilled in place from a killed run's (tensors moved to the run's device)."""
        if self.saved:
            saved = self.saved["kept"][name]
            container.clear()
            if isinstance(container, dict):
                container.update({k: self._on_device(v) for k, v in saved.items()})
            else:
                container.extend(self._on_device(v) for v in saved)
        self.kept[name] = container
        return container

    def _on_device(self, value):
        return value.to(self.device) if isinstance(value, torch.Tensor) else value

    def skip(self, index: int) -> bool:
        """Whether stage `index` was finished before the run was killed (it is not trained again on resume)."""
        return self.saved is not None and index < self.saved["stage"]

    def _objects(self, stage: "Stage", optimizer) -> dict:
        in_model = {id(m) for m in self.model.modules()}
        return {
            "model": self.model,
            "batches": self.train_batches.gen,
            **self.objects,
            **{f"stage_module{i}": m for i, m in enumerate(stage.modules) if id(m) not in in_model},
            **({"optimizer": optimizer} if optimizer is not None else {}),
        }

    def save(self, stage: "Stage", optimizer, values: dict):
        """Checkpoint after an epoch of `stage`: its objects, `values`, the Run's and the method's state."""
        self.ctx.epoch_done(
            self.epoch,
            self._objects(stage, optimizer),
            {**values, "run": {k: getattr(self, k) for k in RUN_STATE}, "kept": self.kept},
        )

    def resume(self, stage: "Stage", optimizer) -> dict:
        """Load the killed run's last checkpoint (taken in `stage`) into the stage's objects and the Run's state;
        the values `save` was given."""
        values: dict = {}
        self.ctx.resume(self._objects(stage, optimizer), values)
        for k in RUN_STATE:
            setattr(self, k, values["run"][k])
        self.saved = None
        return values

    def plain(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Batches:
        """In-order, un-augmented batches of (x, y) (device tensors are not copied)."""
        return Batches(x, y, batch_size, device=self.device, mean=self.mean, std=self.std)

    def final_metrics(self) -> dict:
        opts = self.opts
        if not opts["cache_prefix"]:
            code = CACHE_OFF
        elif any(c == CACHE_NOT_EXACT for c in self.cache_codes):
            code = CACHE_NOT_EXACT
        elif any(c == CACHE_TOO_LARGE for c in self.cache_codes):
            code = CACHE_TOO_LARGE
        else:
            code = CACHE_ON if self.cache_codes else CACHE_OFF
        return {
            "train_time_s": self.train_time,
            "prefix_time_s": self.prefix_time,
            "prefix_cache_saved_s": self.cache_saved,
            "prefix_cache": float(code),
            "prefix_cached_stages": float(sum(c == CACHE_ON for c in self.cache_codes)),
            "total_epochs": float(self.epoch),
        }


class StageFeatures:
    """The features after the frozen blocks < `first`, for training batches, test batches and a fixed subset."""

    def __init__(self, run: Run, first: int):
        self.run, self.first = run, first
        self.blocks = list(run.model.blocks[:first])
        for block in self.blocks:
            freeze(block)
        self.train_cache = self.test_cache = None
        self.train_build_s = self.test_build_s = 0.0
        self.train_passes = self.test_passes = 0
        self._subset = None
        self.train_code = self.test_code = CACHE_OFF
        if self.blocks and run.opts["cache_prefix"]:
            per_sample = self._sample_bytes()
            budget = run.opts["prefix_cache_max_mb"] * 2**20
            train_bytes = per_sample * len(run.data.y_train)
            test_bytes = per_sample * len(run.data.y_test)
            if run.augmented:
                self.train_code = CACHE_NOT_EXACT
            elif train_bytes <= budget:
                self.train_code, budget = CACHE_ON, budget - train_bytes
            else:
                self.train_code = CACHE_TOO_LARGE
            self.test_code = CACHE_ON if test_bytes <= budget else CACHE_TOO_LARGE
        if self.blocks:
            run.cache_codes.append(self.train_code)

    @torch.no_grad()
    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def _sample_bytes(self) -> int:
        x, _ = next(iter(self.run.plain(self.run.data.x_train[:1], self.run.data.y_train[:1], 1)))
        f = self.prefix(x)
        return f[0].numel() * f.element_size()

    @torch.no_grad()
    def _build(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        return torch.cat([self.prefix(xb) for xb, _ in self.run.plain(x, y, batch_size)])

    def train(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled training batches of prefix features (the run's shuffle either way)."""
        for _, f, y in self.train_indexed():
            yield f, y

    def train_indexed(self) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(sample indices on the CPU, prefix features, labels) of one epoch's shuffled training batches."""
        self.train_passes += 1
        run = self.run
        batches = run.train_batches
        if self.train_code != CACHE_ON:
            for idx, x, y in batches.indexed():
                if self.blocks:
                    with run.timer.span():
                        x = self.prefix(x)
                yield idx, x, y
            return
        self._build_train_cache()
        n = len(batches.y)
        # the same draw as Batches (no augmentation: the shuffle is the generator's only use)
        order, order_dev = batches.epoch_order_moved()
        for start in range(0, n, batches.batch_size):
            idx = order_dev[start : start + batches.batch_size]
            yield order[start : start + batches.batch_size], self.train_cache[idx], batches.y[idx]

    def _build_train_cache(self):
        if self.train_cache is None:
            batches = self.run.train_batches
            with EpochTimer(self.run.device) as build:
                self.train_cache = self._build(batches.x, batches.y, batches.batch_size)
            self.train_build_s = build.seconds
            self.run.timer.seconds += build.seconds

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """Prefix features of the training samples `idx`, as an epoch's batches give them (from the cache, or
        converted, augmented and passed through the prefix now)."""
        if self.train_code == CACHE_ON:
            self._build_train_cache()
            return self.train_cache[idx.to(self.train_cache.device)]
        x, _ = self.run.train_batches.take(idx)
        if self.blocks:
            with self.run.timer.span():
                x = self.prefix(x)
        return x

    def in_order(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The whole training set's prefix features in sample order, un-augmented, in evaluation-size chunks."""
        run = self.run
        if self.train_code == CACHE_ON:
            self._build_train_cache()
            bs = run.eval_batch_size
            for start in range(0, len(run.train_batches.y), bs):
                yield self.train_cache[start : start + bs], run.train_batches.y[start : start + bs]
            return
        for x, y in run.plain(run.data.x_train, run.data.y_train, run.eval_batch_size):
            yield self.prefix(x), y

    def test(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The test set's prefix features, in order, in evaluation batches."""
        self.test_passes += 1
        run = self.run
        batches = run.test_batches
        if self.test_code != CACHE_ON:
            for x, y in batches:
                yield self.prefix(x), y
            return
        if self.test_cache is None:
            with EpochTimer(run.device) as build:
                self.test_cache = self._build(batches.x, batches.y, batches.batch_size)
            self.test_build_s = build.seconds
        bs = batches.batch_size
        for start in range(0, len(batches.y), bs):
            yield self.test_cache[start : start + bs], batches.y[start : start + bs]

    def subset(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix features and labels of the first n training samples, without augmentation (computed once)."""
        if self._subset is None or len(self._subset[1]) != min(n, len(self.run.data.y_train)):
            x, y = self.run.data.x_train[:n], self.run.data.y_train[:n]
            feats = self._build(x, y, self.run.eval_batch_size)
            self._subset = (feats, y.to(self.run.device))
        return self._subset

    def close(self):
        """Free the caches and add what they saved to the run's estimate."""
        run = self.run
        run.cache_saved += self.train_build_s * max(0, self.train_passes - 1)
        run.cache_saved += self.test_build_s * max(0, self.test_passes - 1)
        self.train_cache = self.test_cache = self._subset = None


@torch.no_grad()
def evaluate_features(
    forward: Callable[[torch.Tensor], torch.Tensor],
    modules: Iterable[nn.Module],
    batches: Iterable,
    device: torch.device,
    keep_logits: bool = False,
):
    """(mean CE, accuracy %, logits or None) of `forward` over (features, labels) batches; `modules` are put in
    eval mode first; one host sync."""
    for m in modules:
        m.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n, kept = 0, []
    for f, y in batches:
        logits = forward(f)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
        if keep_logits:
            kept.append(logits)
    return loss_sum.item() / n, 100.0 * correct.item() / n, (torch.cat(kept) if keep_logits else None)


def evaluate_model(run: Run, feats: StageFeatures) -> dict:
    """The full model's test loss and accuracy (model(x) for every test sample), from the stage's prefix."""
    model, first = run.model, feats.first
    loss, acc, _ = evaluate_features(lambda f: forward_from(model, first, f), [model], feats.test(), run.device)
    return {"test_loss": loss, "test_accuracy": acc}


@dataclass
class Stage:
    """One stage of a sequential run: train `modules` on `step`'s loss over the features after blocks < first.

    step(features, labels) -> (loss to minimise, {name: device scalar to sum over the epoch}); with `indexed`,
    step(features, labels, the batch's sample indices) (for losses over partners stored per sample);
    summarize(sums, samples, batches) -> the epoch record's training entries (must contain "train_loss");
    evaluate(last_epoch) -> further record entries (evaluation; its time is excluded from training time).
    milestones: stage epochs (0-based) at whose start the LR is multiplied by gamma; reset_on_decay creates a
    fresh optimizer (momentum reset) there instead of changing the LR in place.
    """

    index: int
    layer: int  # the block trained (len(model.blocks) for the head, -1 for "several")
    features: StageFeatures
    modules: list[nn.Module]
    step: Callable
    summarize: Callable
    epochs: int
    evaluate: Callable[[bool], dict] | None = None
    lr: float | None = None
    milestones: tuple = ()
    gamma: float = 0.1
    reset_on_decay: bool = False
    indexed: bool = False  # step(features, labels, sample indices on the CPU) instead of step(features, labels)
    takes: int = 0  # training batches of the batch's size each step takes (Batches.takes_per_batch: SI's partners)


def _values(sums: dict) -> dict:
    if not sums:
        return {}
    stacked = torch.stack([v.detach().double() for v in sums.values()]).tolist()  # one host sync
    return dict(zip(sums, stacked))


def stage_update(run: Run, stage: Stage, optimizer) -> Callable:
    """update(features, labels, sample indices) -> the batch's statistics (detached): the stage's step, the backward
    of its loss and one optimizer step, compiled whole under the run's `compile_step` (training.compiled_step: the
    backward runs in a nested function, so no tensor of its graph outlives it). Without an optimizer (a stage with
    nothing to train), the step's statistics alone."""

    def backward(f, y, idx):
        loss, stats = stage.step(f, y, idx) if stage.indexed else stage.step(f, y)
        if optimizer is not None:
            loss.backward()
        return {k: v.detach() for k, v in stats.items()}

    if optimizer is None:
        return backward

    def update(f, y, idx):
        optimizer.zero_grad(set_to_none=True)
        stats = backward(f, y, idx)
        optimizer.step()
        return stats

    return compiled_step(update, fast_settings(run.cfg, run.device))


def train_stage(run: Run, stage: Stage) -> dict:
    """Train one stage; returns its last epoch record."""
    cfg, device, ctx = run.cfg, run.device, run.ctx
    params = parameters(stage.modules)
    for p in params:
        p.requires_grad_(True)
    lr = cfg["lr"] if stage.lr is None else stage.lr
    optimizer = None
    if params:
        optimizer = new_optimizer(params, cfg, lr)
        run.optimizers_created += 1
    record: dict = {}
    start = 0
    if run.saved and run.saved["stage"] == stage.index:  # the killed run was in this stage: go on from there
        saved = run.resume(stage, optimizer)
        start, lr, record = saved["stage_epoch"], saved["lr"], saved["record"]
    update = stage_update(run, stage, optimizer)
    desc = f"{cfg.get('experiment', 'run')} stage {stage.index}"
    for stage_epoch in ctx.bar(range(start, stage.epochs), desc=desc, unit="epoch"):
        if stage_epoch > 0 and stage_epoch in stage.milestones:
            lr *= stage.gamma
            if optimizer is not None:
                if stage.reset_on_decay:
                    optimizer = new_optimizer(params, cfg, lr)
                    update = stage_update(run, stage, optimizer)
                    run.optimizers_created += 1
                else:
                    for group in optimizer.param_groups:
                        group["lr"] = lr
        run.epoch += 1
        run.train_batches.takes_per_batch = stage.takes
        for m in stage.modules:
            m.train()
        sums: dict = {}
        samples = batches = 0
        run.timer.total()  # reset
        with EpochTimer(device) as timer:
            for idx, f, y in ctx.bar(stage.features.train_indexed(), desc=f"epoch {run.epoch}", unit="batch"):
                for k, v in update(f, y, idx).items():
                    sums[k] = sums[k] + v if k in sums else v
                samples += len(y)
                batches += 1
        prefix_s = run.timer.total()
        run.train_time += timer.seconds
        run.prefix_time += prefix_s
        record = {
            "epoch": run.epoch,
            "stage": float(stage.index),
            "layer": float(stage.layer),
            "stage_epoch": float(stage_epoch + 1),
            "lr": float(lr),
            **stage.summarize(_values(sums), samples, batches),
            "epoch_time_s": timer.seconds,
            "prefix_time_s": prefix_s,
            "prefix_cache": float(stage.features.train_code),
        }
        bad = [k for k in DIVERGENCE_KEYS if k in record and not math.isfinite(record[k])]
        if not bad and stage.evaluate is not None:
            with EpochTimer(device) as eval_timer:
                record.update(stage.evaluate(stage_epoch == stage.epochs - 1))
            record["eval_time_s"] = eval_timer.seconds
        ctx.log_epoch(record)
        if bad:
            raise Diverged(
                run.epoch, f"stage {stage.index} (layer {stage.layer}): " + ", ".join(f"{k} {record[k]}" for k in bad)
            )
        run.save(stage, optimizer, {"stage": stage.index, "stage_epoch": stage_epoch + 1, "lr": lr, "record": record})
    for p in params:  # the stage is over: its parameters are frozen (and hold no gradient) from now on
        p.grad = None
        p.requires_grad_(False)
    return record


@torch.no_grad()
def output_features(feats: StageFeatures, module: nn.Module) -> int:
    """Flattened size of module's output on the stage's features (a dry forward of one sample in eval mode)."""
    run = feats.run
    x, _ = next(iter(run.plain(run.data.x_train[:1], run.data.y_train[:1], 1)))
    was_training = module.training
    module.eval()
    out = module(feats.prefix(x))
    module.train(was_training)
    return out[0].numel()


def ce_step(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """A Stage.step for cross-entropy on forward(features); use with `ce_summary`."""

    def step(f, y):
        logits = forward(f)
        loss = nn.functional.cross_entropy(logits, y)
        return loss, {"loss": loss.detach() * len(y), "correct": (logits.detach().argmax(1) == y).sum()}

    return step


def ce_summary(sums: dict, samples: int, batches: int) -> dict:
    return {"train_loss": sums["loss"] / samples, "train_accuracy": 100.0 * sums["correct"] / samples}


def classifier_stage(
    run: Run, index: int, epochs: int, first: int | None = None, milestones: tuple = (), gamma: float = 0.1
) -> Stage:
    """Train `model.head` (and the blocks >= first, if any: the part of the network that is not trained layer-wise)
    with CE on the frozen blocks < first (default: every block); the full model is evaluated each epoch (on the
    prefix's cached test features this is exactly model(x)). `milestones` (stage epochs) and `gamma`: Stage's LR
    steps (none by default)."""
    model = run.model
    first = len(model.blocks) if first is None else first
    feats = StageFeatures(run, first)
    return Stage(
        index=index,
        layer=first if first == len(model.blocks) else -1,
        features=feats,
        modules=[*model.blocks[first:], model.head],
        step=ce_step(lambda f: forward_from(model, first, f)),
        summarize=ce_summary,
        epochs=epochs,
        evaluate=lambda last: evaluate_model(run, feats),
        milestones=tuple(milestones),
        gamma=gamma,
    )


def feature_blocks(opts: dict, model: nn.Module, method: str) -> int:
    """Option feature_blocks: how many leading blocks are trained layer-wise (None: all of them)."""
    n = opts.get("feature_blocks")
    if n is None:
        return len(model.blocks)
    n = int(n)
    if not 1 <= n <= len(model.blocks):
        raise ValueError(f"{method}: feature_blocks must be in 1..{len(model.blocks)}, got {opts['feature_blocks']}")
    return n


def epochs_per_layer(cfg: dict, defaults: dict) -> int:
    """The epochs of one block's stage: option epochs_per_layer, else the method's default."""
    return int((cfg.get("method_options") or {}).get("epochs_per_layer", defaults["epochs_per_layer"]))


def block_stage_epochs(cfg: dict, defaults: dict, n_blocks: int) -> list[int]:
    """The epochs of each block's stage, for the blocks trained layer-wise (option feature_blocks, else all)."""
    n = int((cfg.get("method_options") or {}).get("feature_blocks") or n_blocks)
    return [epochs_per_layer(cfg, defaults)] * n


def classified_stage_epochs(cfg: dict, defaults: dict, n_blocks: int) -> list[int]:
    """The blocks' stages, then the classifier's (option classifier_epochs, else epochs_per_layer)."""
    classifier = (cfg.get("method_options") or {}).get("classifier_epochs") or epochs_per_layer(cfg, defaults)
    return block_stage_epochs(cfg, defaults, n_blocks) + [int(classifier)]


def hold_all(model: nn.Module) -> dict:
    """requires_grad False on every parameter of the model (a stage turns on its own); returns the original flags
    for `restore_requires_grad`."""
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in flags:
        p.requires_grad_(False)
    return flags


def restore_requires_grad(flags: dict):
    for p, flag in flags.items():
        p.requires_grad_(flag)


@contextmanager
def frozen_parameters(model: nn.Module):
    """requires_grad False on every parameter of the model inside the block (a stage turns on its own); the original
    flags come back on exit, also when the block raises."""
    flags = hold_all(model)
    try:
        yield
    finally:
        restore_requires_grad(flags)


def test_metrics(record: dict) -> dict:
    """The final test entries from an epoch record that evaluated the full model."""
    return {
        "test_accuracy": record["test_accuracy"],
        "test_error": 100.0 - record["test_accuracy"],
        "test_loss": record["test_loss"],
    }


def train_classifier(run: Run, n_layers: int, epochs: int, milestones: tuple = (), gamma: float = 0.1) -> dict:
    """The last stage of the sequential methods: the classifier (and any blocks after the first `n_layers`) by CE on
    the frozen layer-wise-trained blocks, with optional LR steps (`classifier_stage`); returns its last epoch
    record."""
    stage = classifier_stage(run, n_layers, epochs, first=n_layers, milestones=milestones, gamma=gamma)
    last = train_stage(run, stage)
    stage.features.close()
    return last


def final_metrics(run: Run, last: dict) -> dict:
    """Test metrics of the finished model, the run's totals and the last epoch's training loss and accuracy."""
    return {
        **test_metrics(last),
        **run.final_metrics(),
        "train_loss": last["train_loss"],
        "train_accuracy": last["train_accuracy"],
    }
