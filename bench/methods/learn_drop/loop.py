"""The training loop of Learn & Drop and Freezing (bench/methods/learn_drop): one `train(model, data, cfg, ctx)` for
both, as cfg["method"] says.

Schedule (Algorithm 1): `warmup_epochs` of ordinary full-model training without scoring; then after every epoch
that trained normally, score and decide. Learn & Drop, after a drop decided at the end of epoch k: epoch k+1 runs
the newly dropped layers (tail part, eval mode, no grad) once over the current Data -- the augmented, shuffled
training images if nothing was dropped before (augmentation frozen at that epoch,
docs/methods/learn-drop.md#53-ambiguities item 7), else
the stored maps of the previous cut -- trains the head on those maps batch by batch and stores them (indexed by
sample); no scoring and no decision in that epoch (`decision_pause`). From epoch k+2 the head trains on the stored
maps, shuffled every epoch with the same generator draw as `bench.data.loader.Batches` (one torch.randperm per
epoch), so that without augmentation the batches equal the Freezing run's. Freezing: the same scores and
selection; the selected layers get requires_grad False and stay in the forward pass, in eval mode
(`frozen_eval`: BN uses and keeps its running statistics, as the stored-map tail of Learn & Drop must); fresh
augmentation every epoch; by default also no decision in the epoch right after a freeze (`decision_pause`, so that
both methods decide on the same epochs). The test set is evaluated with the full model after every epoch.

Optimizer: ONE optimizer (the config's, i.e. SGD) over all the model's parameters for the whole run; dropped or
frozen parameters get requires_grad False, so their .grad stays None and torch's SGD skips them (no weight decay,
no momentum update: bit-identical weights), while the remaining parameters keep their momentum buffers. The LR
schedule steps once per epoch. requires_grad flags are restored at the end.

Resume (bench/methods/checkpoint.py): after every epoch the run checkpoints the model (BN statistics included), the
optimizer (the dropped layers' momentum buffers too), the LR schedule, the training batches' generator, the global RNG
states and `_Progress`: the cut, a pending extraction, the decision pause, the P' of the dropped layers (the median
rule's history; the gradient sums S and A start afresh every epoch), drop epochs and schedule, the largest store code,
the accumulated times and MACs, the last test loss/accuracy, and the stored maps' location and recipe. A resumed run
turns requires_grad off for the dropped/frozen layers and gets its stored maps back: the killed run's disk store,
reopened read-only, when its directory (named in the checkpoint, flushed before) is still there; else -- a device
store, or a disk store that is gone -- they are recomputed by replaying every extraction epoch: the dropped layers
have not changed since their drop (no gradient, eval mode: the same weights and BN statistics) and the replay runs
them, in eval mode and without grad, on the same batches (the generator state saved at the extraction epoch's start:
the same shuffle and augmentation), so that on the CPU the maps are bit for bit the ones stored (on CUDA, up to
non-deterministic conv kernels); the replay's time is in no epoch's time. The maps are not put in the checkpoint:
it would rewrite up to `feature_store_max_mb` after every epoch, against one forward pass of the dropped layers per
drop when a run resumes. A checkpointed run's disk stores are named after its checkpoint (learn_drop_maps_<hash>_*),
and a resumed run removes the ones a killed run left behind (the partial store of a killed extraction epoch).

Per-epoch record (ctx.log_epoch): epoch, phase (0 warm-up, 1 trained on images with the full forward, 2 Learn &
Drop extraction epoch, 3 trained on stored maps), lr, train_loss, train_accuracy, test_loss, test_accuracy,
epoch_time_s (training incl. the tail's extraction, the store's I/O and the end-of-epoch scoring/decision;
excludes evaluation and the MAC counting), io_time_s (the part of epoch_time_s spent writing/reading the stored
maps; on CUDA a disk store syncs the device around each transfer so that the time is its own), eval_time_s,
trainable_params (requires_grad), model_params (parameters of the network the epoch trains: Learn & Drop's head;
Freezing's whole model, Fig. 6), macs_epoch (forward MACs per sample actually run in the epoch's training: head
every epoch, plus the tail part in an extraction epoch; Freezing and warm-up: the whole model), dropped_layers
(layers dropped/frozen during the epoch), newly_dropped (layers selected at the end of the epoch), feature_store
(code of the store the epoch read or wrote), and in scoring epochs score_l<i> (P), std_score_l<i> (P') and aapd_l<i>
(Eq. 1) for every head conv layer i (global layer index, `conv_layers` order).

Final metrics: test_accuracy, test_error, test_loss, train_time_s (sum of epoch_time_s), io_time_s_total,
eval_time_s_total, macs_total (sum over epochs of macs_epoch x training samples), macs_forward_full (whole model per
sample), macs_forward_final_head (layers not dropped/frozen at the end + classifier, per sample, on their real
input: the stored map and skip shapes), dropped_layers_final, drop_epoch_l<i> for every dropped layer (the epoch at
whose end it was selected, i.e. its last trained epoch), feature_store, params_trainable_final, scored_layers,
warmup_epochs, decisions (number of drops); and two strings (not metrics): drop_schedule ("epoch:first-last;...")
and layer_names.

method_options (defaults in DEFAULTS):
  warmup_epochs          e1, full-model epochs before scoring starts (paper 5/10/25; the grid sets it)
  transition_rule        eq4 (first +/- transition, Eq. 4) | max_prefix (argmax of prefix sums, the prose)
  std_ddof               0 (population std) | 1
  scored_tensors         conv_weight (the conv weights only) | layer_params (every parameter of the layer)
  candidates_inclusive   true (z..n*) | false (z..n*-1, Algorithm 1's slice); eq4 only
  resnet_cut             conv (cut after any conv, storing main + skip inside units) | unit
  shortcut_position      last | first: where a unit's shortcut conv sits in the layer order
  decision_pause         true: no scoring/decision in the epoch after a drop (Algorithm 1) or freeze
  frozen_eval            true: Freezing's frozen layers run in eval mode (false: BN keeps training statistics)
  feature_store_max_mb   8192: device-memory budget of the stored maps (0: always a disk memmap)
  feature_store_dir      null: parent of the memmap's temporary directory (null: the system's temp dir)
  feature_store_dtype    float32 | float16 (halves the store; breaks the drop/freeze equivalence)
  forced_drops           {} -- TEST ONLY: {epoch: [layer indices]} drops/freezes exactly these layers (the next
                         ones after the current cut) at the end of that epoch; when given, no natural decision.
"""

import copy
import hashlib
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench.methods import Diverged, merge_options
from bench.methods.learn_drop.layers import Chain, chain_macs, conv_layers, state_shapes
from bench.methods.learn_drop.scores import RULES, GradientSums, select_drop, standardize
from bench.methods.learn_drop.store import (
    STORE_DISK,
    STORE_NONE,
    STORE_PREFIX,
    FeatureStore,
    StoredBatches,
    timed_reads,
)
from bench.methods.training import (
    Context,
    EpochTimer,
    SpanTimer,
    compiled_step,
    evaluate,
    fast_settings,
    make_optimizer,
    make_scheduler,
    requires_grad_restored,
    sync,
    train_test_batches,
)

MODES = ("learn_drop", "freezing")
PHASE_WARMUP, PHASE_IMAGES, PHASE_EXTRACT, PHASE_STORED = 0, 1, 2, 3
DEFAULTS = {
    "warmup_epochs": 1,
    "transition_rule": "eq4",
    "std_ddof": 0,
    "scored_tensors": "conv_weight",
    "candidates_inclusive": True,
    "resnet_cut": "conv",
    "shortcut_position": "last",
    "decision_pause": True,
    "frozen_eval": True,
    "feature_store_max_mb": 8192,
    "feature_store_dir": None,
    "feature_store_dtype": "float32",
    "forced_drops": {},
}


def options(cfg: dict, mode: str) -> dict:
    o = merge_options(cfg, DEFAULTS, mode)
    o["warmup_epochs"] = int(o["warmup_epochs"])
    o["std_ddof"] = int(o["std_ddof"])
    o["feature_store_max_mb"] = float(o["feature_store_max_mb"])
    for key in ("candidates_inclusive", "decision_pause", "frozen_eval"):
        o[key] = bool(o[key])
    checks = [
        ("transition_rule", RULES),
        ("scored_tensors", ("conv_weight", "layer_params")),
        ("resnet_cut", ("conv", "unit")),
        ("shortcut_position", ("last", "first")),
        ("feature_store_dtype", ("float32", "float16")),
    ]
    for key, allowed in checks:
        if o[key] not in allowed:
            raise ValueError(f"{mode}: {key} must be one of {', '.join(allowed)}, got '{o[key]}'")
    if o["warmup_epochs"] < 0 or o["std_ddof"] < 0 or o["feature_store_max_mb"] < 0:
        raise ValueError(f"{mode}: warmup_epochs, std_ddof and feature_store_max_mb must be >= 0")
    o["forced_drops"] = {int(e): sorted(int(i) for i in v) for e, v in dict(o["forced_drops"] or {}).items()}
    return o


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    """Learn & Drop or Freezing, as cfg["method"] says (default learn_drop)."""
    return run(model, data, cfg, ctx, cfg.get("method", "learn_drop"))


@dataclass
class _Progress:
    """What an epoch hands to the next besides the model, optimizer, scheduler and the batches' generator: the
    plain values a checkpoint saves (`asdict`) and a resumed run starts from."""

    cut: int = 0  # layers[:cut] are dropped (learn_drop) or frozen (freezing)
    store_cut: int = 0  # learn_drop: the stored maps enter layers[store_cut:]
    pending: tuple | None = None  # learn_drop: (from_cut, to_cut) to extract in the next epoch
    pause: bool = False  # a drop/freeze happened at the end of the previous epoch
    dropped_scores: list = field(default_factory=list)  # P' of every dropped layer at its drop (the median rule)
    drop_epoch: dict = field(default_factory=dict)  # layer index -> the epoch at whose end it was selected
    schedule: list = field(default_factory=list)  # "epoch:first-last" per decision
    # learn_drop: every extraction epoch's {"from", "to", "gen": the batches' generator state at its start}, from
    # which a resumed run recomputes the stored maps, and where they live (a disk store's directory; None: device)
    extractions: list = field(default_factory=list)
    store_dir: str | None = None
    store_code_max: int = STORE_NONE
    train_time: float = 0.0
    io_total: float = 0.0
    eval_total: float = 0.0
    macs_total: float = 0.0
    test_loss: float = float("nan")
    test_acc: float = float("nan")


def run(model: nn.Module, data, cfg: dict, ctx: Context, mode: str) -> dict:
    if mode not in MODES:
        raise ValueError(f"learn_drop module runs {', '.join(MODES)}, not '{mode}'")
    if data.x_train.ndim != 4:
        raise ValueError(f"{mode}: image data (N x C x H x W) only")
    return _Run(model, data, cfg, ctx, mode).train()


def _backward(forward, inputs: tuple, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of forward(*inputs) and its backward: (loss, logits), detached."""
    logits = forward(*inputs)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    return loss.detach(), logits.detach()


@dataclass
class _Epoch:
    """One epoch from its start to its record (ctx.log_epoch): what it runs, its running sums and what it decided."""

    number: int
    phase: int
    macs: int  # forward MACs per sample run in the epoch's training
    model_params: int  # parameters of the network the epoch trains
    extracting: bool  # learn_drop: runs the newly dropped layers once and stores their maps
    lr: float
    trainable: int
    grads: GradientSums | None  # the head's gradient sums in a scoring epoch, else None
    loss_sum: torch.Tensor
    correct: torch.Tensor
    dev_io: SpanTimer  # the stored maps' device-side transfers
    host_io: float = 0.0  # the stored maps' host-side I/O (disk writes and reads, opening a store)
    scores: dict = field(default_factory=dict)  # score_l<i>, std_score_l<i>, aapd_l<i> in a scoring epoch
    new_layers: list = field(default_factory=list)  # the layers selected at the end of the epoch
    dropped_before: int = 0  # the cut the epoch trained with
    feature_code: int = STORE_NONE
    train_time: float = 0.0
    io_time: float = 0.0
    eval_time: float = 0.0


class _Run:
    """One Learn & Drop or Freezing run: the model, its layers, the optimizer and schedule, the batches, the stored
    maps and the checkpointed `_Progress` (self.st), which `train` carries from epoch to epoch."""

    def __init__(self, model: nn.Module, data, cfg: dict, ctx: Context, mode: str):
        self.model, self.cfg, self.ctx, self.mode = model, cfg, ctx, mode
        self.o = options(cfg, mode)
        self.dropping = mode == "learn_drop"
        self.device = ctx.device
        self.layers = conv_layers(model, self.o["shortcut_position"])
        self.boundaries = {0} | {j + 1 for j, layer in enumerate(self.layers) if layer.ends_block}
        self.train_batches, self.test_batches = train_test_batches(data, cfg, self.device, ctx.seed)
        self.n = len(data.y_train)
        self.shapes = state_shapes(model, self.layers, self.device)
        self.steps = [layer.step for layer in self.layers]
        self.macs_cache: dict = {}
        self.full_macs = self.head_macs(0)
        self.optimizer = make_optimizer(model.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.update = compiled_step(self._update, fast_settings(cfg, self.device))  # a whole step, `step`
        # a killed run's checkpoint (bench/methods/checkpoint.py): the objects' states, the global RNG states and `st`
        self.objects = {
            "model": model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "batches": self.train_batches.gen,
        }
        values = asdict(_Progress())
        self.start = ctx.resume(self.objects, values)
        self.st = _Progress(**values)
        # disk stores of a checkpointed run are named after its checkpoint, so that a resumed run finds the ones a
        # killed run left behind: it reuses the one its checkpoint names and removes the others
        self.prefix = STORE_PREFIX
        if ctx.checkpoint is not None:
            self.prefix += hashlib.sha1(str(Path(ctx.checkpoint.path).resolve()).encode()).hexdigest()[:12] + "_"
        self.open_stores: list[FeatureStore] = []
        self.store: FeatureStore | None = None  # learn_drop: the stored maps entering layers[st.store_cut:]

    # -- the whole run

    def train(self) -> dict:
        with requires_grad_restored(self.model):
            try:
                self.stop_training(self.layers[: self.st.cut])
                if self.dropping:
                    self.store = self.resumed_store()
                epochs = range(self.start + 1, self.cfg["epochs"] + 1)
                for number in self.ctx.bar(epochs, desc=self.cfg.get("experiment", self.mode), unit="epoch"):
                    self.epoch(number)
                final_trainable = self.trainable()
            finally:
                for s in self.open_stores:
                    s.close()
        return self.final_metrics(final_trainable)

    def final_metrics(self, final_trainable: int) -> dict:
        st = self.st
        return {
            "test_accuracy": st.test_acc,
            "test_error": 100.0 - st.test_acc,
            "test_loss": st.test_loss,
            "train_time_s": st.train_time,
            "io_time_s_total": st.io_total,
            "eval_time_s_total": st.eval_total,
            "macs_total": st.macs_total,
            "macs_forward_full": float(self.full_macs),
            "macs_forward_final_head": float(self.head_macs(st.cut)),
            "dropped_layers_final": float(st.cut),
            "decisions": float(len(st.schedule)),
            "feature_store": float(st.store_code_max),
            "params_trainable_final": float(final_trainable),
            "scored_layers": float(len(self.layers)),
            "warmup_epochs": float(self.o["warmup_epochs"]),
            **{f"drop_epoch_l{i}": float(e) for i, e in sorted(st.drop_epoch.items())},
            "drop_schedule": ";".join(st.schedule),
            "layer_names": ",".join(layer.name for layer in self.layers),
        }

    # -- counts

    def head_macs(self, cut: int) -> int:
        if ("head", cut) not in self.macs_cache:
            self.macs_cache[("head", cut)] = chain_macs(Chain(self.steps[cut:], self.model.head), self.shapes[cut])
        return self.macs_cache[("head", cut)]

    def part_macs(self, a: int, b: int) -> int:
        if ("part", a, b) not in self.macs_cache:
            self.macs_cache[("part", a, b)] = chain_macs(Chain(self.steps[a:b]), self.shapes[a])
        return self.macs_cache[("part", a, b)]

    def trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def on_head(self) -> bool:
        """Learn & Drop after its first drop: the epoch trains the head (the layers after the cut + classifier)."""
        return self.dropping and self.st.cut > 0

    # -- one epoch

    def epoch(self, number: int):
        e = self.start_epoch(number)
        if e.extracting:  # what a resumed run needs to recompute this epoch's maps
            pending = self.st.pending
            self.st.extractions.append(
                {"from": pending[0], "to": pending[1], "gen": self.train_batches.gen.get_state()}
            )
        with EpochTimer(self.device) as timer:
            self.train_epoch(e)
            self.scheduler.step()
            self.decide(e)
        e.train_time = timer.seconds
        e.io_time = e.dev_io.total() + e.host_io
        e.feature_code = self.store.kind if (self.on_head() and self.store is not None) else STORE_NONE
        e.dropped_before = self.st.cut
        self.drop(e.number, e.new_layers)
        self.st.train_time += e.train_time
        self.st.io_total += e.io_time
        self.st.macs_total += float(e.macs) * self.n
        with EpochTimer(self.device) as eval_timer:
            self.st.test_loss, self.st.test_acc = evaluate(self.model, self.test_batches, self.device)
        e.eval_time = eval_timer.seconds
        self.st.eval_total += e.eval_time
        self.ctx.log_epoch(self.record(e))
        train_loss = e.loss_sum.item() / self.n
        if not math.isfinite(train_loss):
            raise Diverged(e.number, f"{self.mode}: train loss {train_loss}")
        if e.extracting and self.ctx.checkpoint is not None:
            self.store.flush()  # the checkpoint names the new maps' files (outside the timed epoch)
        self.ctx.epoch_done(e.number, self.objects, asdict(self.st))

    def start_epoch(self, number: int) -> _Epoch:
        """The epoch's phase, MACs and model size, its modes set (dropped/frozen layers in eval mode), its sums."""
        st, o = self.st, self.o
        warm = number <= o["warmup_epochs"]
        extracting = self.dropping and st.pending is not None
        # L > L0: at least two conv layers left in the head (the last conv is never a candidate)
        score_now = not warm and not (st.pause and o["decision_pause"]) and len(self.layers) - st.cut >= 2
        if self.on_head():
            phase = PHASE_EXTRACT if extracting else PHASE_STORED
            macs = self.head_macs(st.cut) + (self.part_macs(*st.pending) if extracting else 0)
            model_params = sum(p.numel() for layer in self.layers[st.cut :] for p in layer.params)
            model_params += sum(p.numel() for p in self.model.head.parameters())
        else:
            phase = PHASE_WARMUP if warm else PHASE_IMAGES
            macs = self.full_macs
            model_params = sum(p.numel() for p in self.model.parameters())
        self.model.train()
        if self.dropping or o["frozen_eval"]:
            for layer in self.layers[: st.cut]:
                layer.step.eval()
        return _Epoch(
            number=number,
            phase=phase,
            macs=macs,
            model_params=model_params,
            extracting=extracting,
            lr=self.optimizer.param_groups[0]["lr"],
            trainable=self.trainable(),
            grads=GradientSums(self.layers[st.cut :], o["scored_tensors"]) if score_now else None,
            loss_sum=torch.zeros((), device=self.device),
            correct=torch.zeros((), device=self.device, dtype=torch.long),
            dev_io=SpanTimer(self.device),
        )

    def record(self, e: _Epoch) -> dict:
        return {
            "epoch": e.number,
            "phase": float(e.phase),
            "lr": float(e.lr),
            "train_loss": e.loss_sum.item() / self.n,
            "train_accuracy": 100.0 * e.correct.item() / self.n,
            "test_loss": self.st.test_loss,
            "test_accuracy": self.st.test_acc,
            "epoch_time_s": e.train_time,
            "io_time_s": e.io_time,
            "eval_time_s": e.eval_time,
            "trainable_params": float(e.trainable),
            "model_params": float(e.model_params),
            "macs_epoch": float(e.macs),
            "dropped_layers": float(e.dropped_before),
            "newly_dropped": float(len(e.new_layers)),
            "feature_store": float(e.feature_code),
            **e.scores,
        }

    # -- training

    def train_epoch(self, e: _Epoch):
        if not self.on_head():
            for x, y in self.ctx.bar(self.train_batches, desc=f"epoch {e.number}", unit="batch"):
                self.step(e, self.model, (x,), y)
        elif e.extracting:
            self.train_extracting(e)
        else:
            self.train_on_stored(e)

    def step(self, e: _Epoch, forward, inputs: tuple, y: torch.Tensor):
        """One optimizer step on a batch (the full model's, or the head's on stored maps); the gradient sums of a
        scoring epoch take its gradients."""
        loss, logits = self.update(forward, inputs, y, e.grads)
        e.loss_sum += loss * len(y)
        e.correct += (logits.argmax(1) == y).sum()

    def _update(self, forward, inputs: tuple, y: torch.Tensor, grads: GradientSums | None):
        """The whole step, compiled under `compile_step` (training.compiled_step): forward, loss and backward in
        `_backward` (so that no tensor of the backward's graph outlives it), the gradient sums, the optimizer step;
        (loss, logits), detached."""
        self.optimizer.zero_grad(set_to_none=True)
        out = _backward(forward, inputs, y)
        if grads is not None:
            grads.add()
        self.optimizer.step()
        return out

    def head(self) -> Chain:
        return Chain(self.steps[self.st.cut :], self.model.head)

    def train_on_stored(self, e: _Epoch):
        head, source = self.head(), StoredBatches(self.store, self.train_batches)
        for _idx, inputs, y in self.ctx.bar(
            timed_reads(source, self.store, e.dev_io), desc=f"epoch {e.number}", unit="batch"
        ):
            self.step(e, head, inputs, y)
        e.host_io += getattr(source, "host_io", 0.0)

    def train_extracting(self, e: _Epoch):
        """Learn & Drop's extraction epoch: the newly dropped layers (layers[a:b]) run once, without grad, over the
        current Data (the training images, or the stored maps of the previous cut); their maps are stored and the
        head trains on them batch by batch. The new store then replaces the old one."""
        head, store = self.head(), self.store
        a, b = self.st.pending
        part = Chain(self.steps[a:b])
        maps = None
        source = self.train_batches.indexed() if store is None else StoredBatches(store, self.train_batches)
        for idx, inputs, y in self.ctx.bar(
            timed_reads(source, store, e.dev_io), desc=f"epoch {e.number}", unit="batch"
        ):
            inputs = inputs if isinstance(inputs, tuple) else (inputs,)
            with torch.no_grad():
                feats = part(*inputs)
            if maps is None:
                t0 = time.perf_counter()
                maps = self.new_store(b)
                e.host_io += time.perf_counter() - t0
            self.write_maps(e, maps, idx, feats)
            self.step(e, head, feats, y)
        if store is not None:
            e.host_io += getattr(source, "host_io", 0.0)
            store.close()
        self.store, self.st.store_cut, self.st.store_dir, self.st.pending = maps, b, maps.dir, None
        self.st.store_code_max = max(self.st.store_code_max, maps.kind)

    def write_maps(self, e: _Epoch, maps: FeatureStore, idx, feats):
        """Store a batch's maps, the time counted as I/O (a disk store syncs the device first: its own time)."""
        if maps.kind == STORE_DISK:
            sync(self.device)
            t0 = time.perf_counter()
            maps.write(idx, feats)
            e.host_io += time.perf_counter() - t0
        else:
            with e.dev_io.span():
                maps.write(idx, feats)

    # -- scoring and the drop decision

    def decide(self, e: _Epoch):
        """A scoring epoch's scores and, unless forced_drops is given, its selection; then the forced drops."""
        o = self.o
        if e.grads is not None:
            p_std = self.score(e)
            if not o["forced_drops"]:
                e.new_layers = self.selected(p_std)
                self.st.dropped_scores += [float(p_std[i - self.st.cut]) for i in e.new_layers]
        if o["forced_drops"].get(e.number):
            e.new_layers = self.forced(e.number)
            self.st.dropped_scores += [float(e.scores.get(f"std_score_l{i}", float("nan"))) for i in e.new_layers]

    def score(self, e: _Epoch):
        """P, P' and AAPD of every head layer into e.scores; returns P'."""
        p, aapd = e.grads.scores()
        p_std = standardize(p, self.o["std_ddof"])
        for j, layer in enumerate(self.layers[self.st.cut :]):
            e.scores[f"score_l{layer.index}"] = p[j]
            e.scores[f"std_score_l{layer.index}"] = float(p_std[j])
            e.scores[f"aapd_l{layer.index}"] = aapd[j]
        return p_std

    def selected(self, p_std) -> list[int]:
        """The layers the rule selects from P' (resnet_cut unit: back to the last block boundary)."""
        o = self.o
        chosen = select_drop(p_std, self.st.dropped_scores, o["transition_rule"], o["candidates_inclusive"])
        new_cut = self.st.cut + len(chosen)
        if o["resnet_cut"] == "unit":
            new_cut = max(k for k in self.boundaries if k <= new_cut)
        return list(range(self.st.cut, new_cut))

    def forced(self, number: int) -> list[int]:
        """forced_drops' layers at this epoch (TEST ONLY), which must be the next ones after the cut."""
        new_layers, cut = self.o["forced_drops"][number], self.st.cut
        if new_layers != list(range(cut, new_layers[-1] + 1)) or new_layers[-1] >= len(self.layers) - 1:
            raise ValueError(
                f"forced_drops at epoch {number}: {new_layers} are not the next layers after "
                f"the {cut} dropped ones (the last conv layer cannot be dropped)"
            )
        return new_layers

    def drop(self, number: int, new_layers: list[int]):
        """Drop (learn_drop: extracted in the next epoch) or freeze the selected layers; the pause follows."""
        st = self.st
        if new_layers:
            old_cut, st.cut = st.cut, new_layers[-1] + 1
            self.stop_training(self.layers[old_cut : st.cut])
            for layer in self.layers[old_cut : st.cut]:
                st.drop_epoch[layer.index] = number
            st.schedule.append(f"{number}:{old_cut}-{st.cut - 1}")
            if self.dropping:
                st.pending = (st.store_cut, st.cut)
        st.pause = bool(new_layers)

    @staticmethod
    def stop_training(layers: list):
        """requires_grad False and no gradient: the one optimizer skips these layers' parameters from now on."""
        for layer in layers:
            for p in layer.params:
                p.requires_grad_(False)
                p.grad = None

    # -- the stored maps

    def new_store(self, cut: int) -> FeatureStore:
        o = self.o
        s = FeatureStore(
            self.n,
            self.shapes[cut],
            o["feature_store_dtype"],
            self.device,
            o["feature_store_max_mb"],
            o["feature_store_dir"],
            self.prefix,
        )
        self.open_stores.append(s)
        return s

    def resumed_store(self) -> FeatureStore | None:
        """The stored maps entering layers[st.store_cut:] when resuming: the killed run's disk store if it is still
        there, else recomputed by replaying the extraction epochs (module docstring, "Resume")."""
        st, o = self.st, self.o
        kept = st.store_dir and FeatureStore.reopen(
            st.store_dir, self.n, self.shapes[st.store_cut], o["feature_store_dtype"], self.device
        )
        if self.ctx.checkpoint is not None:
            self.remove_stale_stores(kept)
        if kept:
            self.open_stores.append(kept)
            return kept
        return self.replayed_store()

    def remove_stale_stores(self, kept: FeatureStore | None):
        """The disk stores a killed run of this checkpoint left behind, all but the one it names."""
        parent = Path(self.o["feature_store_dir"] or tempfile.gettempdir())
        for stale in parent.glob(self.prefix + "*"):
            if not kept or stale.resolve() != Path(kept.dir).resolve():
                shutil.rmtree(stale, ignore_errors=True)

    def replayed_store(self) -> FeatureStore | None:
        """The stored maps recomputed: every extraction epoch replayed on its batches (its saved generator state),
        the dropped layers in eval mode and without grad; None before the first drop."""
        maps = None
        self.model.train()
        for layer in self.layers[: self.st.cut]:
            layer.step.eval()
        for e in self.st.extractions:
            replay = copy.copy(self.train_batches)
            replay.gen = torch.Generator()
            replay.gen.set_state(e["gen"])
            source = replay.indexed() if maps is None else StoredBatches(maps, replay)
            part, out = Chain(self.steps[e["from"] : e["to"]]), self.new_store(e["to"])
            with torch.no_grad():
                for idx, inputs, _ in source:
                    out.write(idx, part(*(inputs if isinstance(inputs, tuple) else (inputs,))))
            if maps is not None:
                maps.close()
            maps = out
        return maps
