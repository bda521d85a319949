"""The training loop of Learn & Drop and Freezing (bench/methods/learn_drop): one `train(model, data, cfg, ctx)` for
both, as cfg["method"] says.

Schedule (Algorithm 1): `warmup_epochs` of ordinary full-model training without scoring; then after every epoch
that trained normally, score and decide. Learn & Drop, after a drop decided at the end of epoch k: epoch k+1 runs
the newly dropped layers (tail part, eval mode, no grad) once over the current Data -- the augmented, shuffled
training images if nothing was dropped before (augmentation frozen at that epoch, methods.md 5.3 item 7), else
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

Resume (bench/methods/checkpoint.py): after every epoch the run checkpoints the model (BN statistics included), the optimizer
(the dropped layers' momentum buffers too), the LR schedule, the training batches' generator, the global RNG states
and `_Progress`: the cut, a pending extraction, the decision pause, the P' of the dropped layers (the median rule's
history; the gradient sums S and A start afresh every epoch), drop epochs and schedule, the largest store code, the
accumulated times and MACs, the last test loss/accuracy, and the stored maps' location and recipe. A resumed run
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
from bench.methods.layerwise import SpanTimer
from bench.methods.learn_drop.layers import Chain, chain_macs, conv_layers, state_shapes
from bench.methods.learn_drop.scores import RULES, GradientSums, select_drop, standardize
from bench.methods.learn_drop.store import (STORE_DISK, STORE_NONE, STORE_PREFIX, FeatureStore, StoredBatches,
                                             timed_reads)
from bench.methods.training import Context, EpochTimer, evaluate, make_optimizer, make_scheduler, sync, train_test_batches

MODES = ("learn_drop", "freezing")
PHASE_WARMUP, PHASE_IMAGES, PHASE_EXTRACT, PHASE_STORED = 0, 1, 2, 3
DEFAULTS = {"warmup_epochs": 1, "transition_rule": "eq4", "std_ddof": 0, "scored_tensors": "conv_weight",
            "candidates_inclusive": True, "resnet_cut": "conv", "shortcut_position": "last", "decision_pause": True,
            "frozen_eval": True, "feature_store_max_mb": 8192, "feature_store_dir": None,
            "feature_store_dtype": "float32", "forced_drops": {}}


def options(cfg: dict, mode: str) -> dict:
    o = merge_options(cfg, DEFAULTS, mode)
    o["warmup_epochs"] = int(o["warmup_epochs"])
    o["std_ddof"] = int(o["std_ddof"])
    o["feature_store_max_mb"] = float(o["feature_store_max_mb"])
    for key in ("candidates_inclusive", "decision_pause", "frozen_eval"):
        o[key] = bool(o[key])
    checks = [("transition_rule", RULES), ("scored_tensors", ("conv_weight", "layer_params")),
              ("resnet_cut", ("conv", "unit")), ("shortcut_position", ("last", "first")),
              ("feature_store_dtype", ("float32", "float16"))]
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
    cut: int = 0                   # layers[:cut] are dropped (learn_drop) or frozen (freezing)
    store_cut: int = 0             # learn_drop: the stored maps enter layers[store_cut:]
    pending: tuple | None = None   # learn_drop: (from_cut, to_cut) to extract in the next epoch
    pause: bool = False            # a drop/freeze happened at the end of the previous epoch
    dropped_scores: list = field(default_factory=list)  # P' of every dropped layer at its drop (the median rule)
    drop_epoch: dict = field(default_factory=dict)      # layer index -> the epoch at whose end it was selected
    schedule: list = field(default_factory=list)        # "epoch:first-last" per decision
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
    o = options(cfg, mode)
    dropping = mode == "learn_drop"
    device = ctx.device
    layers = conv_layers(model, o["shortcut_position"])
    num_layers = len(layers)
    boundaries = {0} | {j + 1 for j, layer in enumerate(layers) if layer.ends_block}
    train_batches, test_batches = train_test_batches(data, cfg, device, ctx.seed)
    n = len(data.y_train)
    shapes = state_shapes(model, layers, device)
    steps = [layer.step for layer in layers]
    macs_cache: dict = {}

    def head_macs(cut: int) -> int:
        if ("head", cut) not in macs_cache:
            macs_cache[("head", cut)] = chain_macs(Chain(steps[cut:], model.head), shapes[cut])
        return macs_cache[("head", cut)]

    def part_macs(a: int, b: int) -> int:
        if ("part", a, b) not in macs_cache:
            macs_cache[("part", a, b)] = chain_macs(Chain(steps[a:b]), shapes[a])
        return macs_cache[("part", a, b)]

    full_macs = head_macs(0)
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    original = {p: p.requires_grad for p in model.parameters()}

    # a killed run's checkpoint (bench/methods/checkpoint.py): the objects' states, the global RNG states and `st`
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "batches": train_batches.gen}
    values = asdict(_Progress())
    start = ctx.resume(objects, values)
    st = _Progress(**values)
    # disk stores of a checkpointed run are named after its checkpoint, so that a resumed run finds the ones a
    # killed run left behind: it reuses the one its checkpoint names and removes the others
    prefix = STORE_PREFIX
    if ctx.checkpoint is not None:
        prefix += hashlib.sha1(str(Path(ctx.checkpoint.path).resolve()).encode()).hexdigest()[:12] + "_"

    def new_store(cut: int) -> FeatureStore:
        s = FeatureStore(n, shapes[cut], o["feature_store_dtype"], device, o["feature_store_max_mb"],
                         o["feature_store_dir"], prefix)
        open_stores.append(s)
        return s

    def resumed_store() -> FeatureStore | None:
        """The stored maps entering layers[st.store_cut:] when resuming: the killed run's disk store if it is still
        there, else recomputed by replaying the extraction epochs (module docstring, "Resume")."""
        kept = st.store_dir and FeatureStore.reopen(st.store_dir, n, shapes[st.store_cut], o["feature_store_dtype"],
                                                    device)
        if ctx.checkpoint is not None:
            parent = Path(o["feature_store_dir"] or tempfile.gettempdir())
            for stale in parent.glob(prefix + "*"):
                if not kept or stale.resolve() != Path(kept.dir).resolve():
                    shutil.rmtree(stale, ignore_errors=True)
        if kept:
            open_stores.append(kept)
            return kept
        maps = None
        model.train()
        for layer in layers[:st.cut]:
            layer.step.eval()
        for e in st.extractions:
            replay = copy.copy(train_batches)
            replay.gen = torch.Generator()
            replay.gen.set_state(e["gen"])
            source = replay.indexed() if maps is None else StoredBatches(maps, replay)
            part, out = Chain(steps[e["from"]:e["to"]]), new_store(e["to"])
            with torch.no_grad():
                for idx, inputs, _ in source:
                    out.write(idx, part(*(inputs if isinstance(inputs, tuple) else (inputs,))))
            if maps is not None:
                maps.close()
            maps = out
        return maps

    final_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    open_stores: list[FeatureStore] = []
    try:
        for layer in layers[:st.cut]:
            for p in layer.params:
                p.requires_grad_(False)
        store = resumed_store() if dropping else None   # the stored maps entering layers[st.store_cut:]
        for epoch in ctx.bar(range(start + 1, cfg["epochs"] + 1), desc=cfg.get("experiment", mode), unit="epoch"):
            warm = epoch <= o["warmup_epochs"]
            extracting = dropping and st.pending is not None
            # L > L0: at least two conv layers left in the head (the last conv is never a candidate)
            score_now = not warm and not (st.pause and o["decision_pause"]) and num_layers - st.cut >= 2
            if dropping and st.cut > 0:
                phase = PHASE_EXTRACT if extracting else PHASE_STORED
                macs_epoch = head_macs(st.cut) + (part_macs(*st.pending) if extracting else 0)
                model_params = sum(p.numel() for layer in layers[st.cut:] for p in layer.params) + \
                    sum(p.numel() for p in model.head.parameters())
            else:
                phase = PHASE_WARMUP if warm else PHASE_IMAGES
                macs_epoch = full_macs
                model_params = sum(p.numel() for p in model.parameters())
            head = Chain(steps[st.cut:], model.head) if dropping and st.cut > 0 else None
            model.train()
            if dropping or o["frozen_eval"]:
                for layer in layers[:st.cut]:
                    layer.step.eval()
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            acc = GradientSums(layers[st.cut:], o["scored_tensors"]) if score_now else None
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            lr = optimizer.param_groups[0]["lr"]
            dev_io, host_io = SpanTimer(device), 0.0
            new_layers: list[int] = []
            record_scores: dict = {}
            if extracting:  # what a resumed run needs to recompute this epoch's maps
                st.extractions.append({"from": st.pending[0], "to": st.pending[1],
                                       "gen": train_batches.gen.get_state()})

            def step(forward, inputs, y):
                nonlocal loss_sum, correct
                logits = forward(*inputs)
                loss = nn.functional.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if acc is not None:
                    acc.add()
                optimizer.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()

            with EpochTimer(device) as timer:
                if head is None:
                    for x, y in ctx.bar(train_batches, desc=f"epoch {epoch}", unit="batch"):
                        step(model, (x,), y)
                elif extracting:
                    a, b = st.pending
                    part = Chain(steps[a:b])
                    maps = None
                    source = train_batches.indexed() if store is None else StoredBatches(
                        store, train_batches)
                    for idx, inputs, y in ctx.bar(timed_reads(source, store, dev_io), desc=f"epoch {epoch}", unit="batch"):
                        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
                        with torch.no_grad():
                            feats = part(*inputs)
                        if maps is None:
                            t0 = time.perf_counter()
                            maps = new_store(b)
                            host_io += time.perf_counter() - t0
                        if maps.kind == STORE_DISK:
                            sync(device)
                            t0 = time.perf_counter()
                            maps.write(idx, feats)
                            host_io += time.perf_counter() - t0
                        else:
                            with dev_io.span():
                                maps.write(idx, feats)
                        step(head, feats, y)
                    if store is not None:
                        host_io += getattr(source, "host_io", 0.0)
                        store.close()
                    store, st.store_cut, st.store_dir, st.pending = maps, b, maps.dir, None
                    st.store_code_max = max(st.store_code_max, store.kind)
                else:
                    source = StoredBatches(store, train_batches)
                    for idx, inputs, y in ctx.bar(timed_reads(source, store, dev_io), desc=f"epoch {epoch}", unit="batch"):
                        step(head, inputs, y)
                    host_io += getattr(source, "host_io", 0.0)
                scheduler.step()
                if acc is not None:
                    p, aapd = acc.scores()
                    p_std = standardize(p, o["std_ddof"])
                    for j, layer in enumerate(layers[st.cut:]):
                        record_scores[f"score_l{layer.index}"] = p[j]
                        record_scores[f"std_score_l{layer.index}"] = float(p_std[j])
                        record_scores[f"aapd_l{layer.index}"] = aapd[j]
                    if not o["forced_drops"]:
                        chosen = select_drop(p_std, st.dropped_scores, o["transition_rule"],
                                             o["candidates_inclusive"])
                        new_cut = st.cut + len(chosen)
                        if o["resnet_cut"] == "unit":
                            new_cut = max(k for k in boundaries if k <= new_cut)
                        new_layers = list(range(st.cut, new_cut))
                        st.dropped_scores += [float(p_std[i - st.cut]) for i in new_layers]
                if o["forced_drops"].get(epoch):
                    new_layers = o["forced_drops"][epoch]
                    if new_layers != list(range(st.cut, new_layers[-1] + 1)) or new_layers[-1] >= num_layers - 1:
                        raise ValueError(f"forced_drops at epoch {epoch}: {new_layers} are not the next layers after "
                                         f"the {st.cut} dropped ones (the last conv layer cannot be dropped)")
                    st.dropped_scores += [float(record_scores.get(f"std_score_l{i}", float("nan"))) for i in new_layers]
            epoch_time = timer.seconds
            io_time = dev_io.total() + host_io
            feature_code = store.kind if (dropping and store is not None and st.cut > 0) else STORE_NONE
            dropped_now = st.cut
            if new_layers:
                old_cut, st.cut = st.cut, new_layers[-1] + 1
                for layer in layers[old_cut:st.cut]:
                    for p in layer.params:
                        p.requires_grad_(False)
                        p.grad = None
                    st.drop_epoch[layer.index] = epoch
                st.schedule.append(f"{epoch}:{old_cut}-{st.cut - 1}")
                if dropping:
                    st.pending = (st.store_cut, st.cut)
            st.pause = bool(new_layers)
            st.train_time += epoch_time
            st.io_total += io_time
            st.macs_total += float(macs_epoch) * n
            with EpochTimer(device) as eval_timer:
                st.test_loss, st.test_acc = evaluate(model, test_batches, device)
            st.eval_total += eval_timer.seconds
            train_loss = loss_sum.item() / n
            ctx.log_epoch({"epoch": epoch, "phase": float(phase), "lr": float(lr), "train_loss": train_loss,
                           "train_accuracy": 100.0 * correct.item() / n, "test_loss": st.test_loss,
                           "test_accuracy": st.test_acc, "epoch_time_s": epoch_time, "io_time_s": io_time,
                           "eval_time_s": eval_timer.seconds, "trainable_params": float(trainable),
                           "model_params": float(model_params), "macs_epoch": float(macs_epoch),
                           "dropped_layers": float(dropped_now), "newly_dropped": float(len(new_layers)),
                           "feature_store": float(feature_code), **record_scores})
            if not math.isfinite(train_loss):
                raise Diverged(epoch, f"{mode}: train loss {train_loss}")
            if extracting and ctx.checkpoint is not None:
                store.flush()  # the checkpoint names the new maps' files (outside the timed epoch)
            ctx.epoch_done(epoch, objects, asdict(st))
        final_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    finally:
        for s in open_stores:
            s.close()
        for p, flag in original.items():
            p.requires_grad_(flag)
    return {"test_accuracy": st.test_acc, "test_error": 100.0 - st.test_acc, "test_loss": st.test_loss,
            "train_time_s": st.train_time, "io_time_s_total": st.io_total, "eval_time_s_total": st.eval_total,
            "macs_total": st.macs_total, "macs_forward_full": float(full_macs),
            "macs_forward_final_head": float(head_macs(st.cut)), "dropped_layers_final": float(st.cut),
            "decisions": float(len(st.schedule)), "feature_store": float(st.store_code_max),
            "params_trainable_final": float(final_trainable), "scored_layers": float(num_layers),
            "warmup_epochs": float(o["warmup_epochs"]),
            **{f"drop_epoch_l{i}": float(e) for i, e in sorted(st.drop_epoch.items())},
            "drop_schedule": ";".join(st.schedule), "layer_names": ",".join(layer.name for layer in layers)}
