"""Learn & Drop (Cruciata et al., seed 003; registry method `learn_drop`) and its "Freezing" baseline
(registry method `freezing`), methods.md 5. One `train(model, data, cfg, ctx)` serves both: it reads cfg["method"].

Layers. The scored "layers" are the network's conv layers in forward order (`conv_layers`): a VGG block (conv, BN,
activation, dropout, pool) is one layer; a ResNet's stem is one layer and every conv of every residual unit is one
layer, the unit's shortcut conv (when it has one) included, placed after the unit's main-path convs (torchvision's
module order: conv1, conv2[, conv3], downsample; `shortcut_position: first` puts it first). Each layer is a *step*
that maps a state to a state: between units the state is the activation x; inside a residual unit it is the pair
(main-path activation, skip tensor), so a cut inside a unit stores both (paper Fig. 4; methods.md 5.3 item 5). The
skip tensor is the unit's input x while the shortcut conv is still in the head, its output once it is in the tail.
`resnet_cut: unit` allows cuts only at residual-unit boundaries (a cut is rounded down to the last whole unit;
a simpler variant, not the paper's). Any other block must hold at least one conv and is one layer (all its convs
scored together). The model's `head` (pool + dense layers) is never scored nor dropped: with L0 = #dense + 1, the
scoring runs only while the head holds at least two conv layers, and the last conv is never a candidate (Eq. 4
needs t+1).

Score (methods.md 5.1): during every scoring epoch, after each backward and before the optimizer step, every
scored conv weight adds its raw `.grad` to a per-weight running sum S (same shape as the weight) and |grad|'s sum
to a scalar A (no per-iteration history; `torch._foreach_*`, no host sync). At the epoch end P_l = 1 - ||S_l||_1
/ A_l (Eq. 2; `layer_score`; A = 0, i.e. no gradient, gives 1; clamped to [0, 1] against rounding), AAPD_l =
A_l / N_l (Eq. 1, logged only) and P' = standardized P over the head's conv layers (Eq. 3, `standardize`, ddof
`std_ddof`; a zero std (<= 1e-9) gives all zeros, so no transition and no drop). `select_drop` applies Eq. 4 (first t with
P'_t > 0 and P'_{t+1} < 0; candidates 0..n*, or 0..n*-1 with candidates_inclusive false) or the prose's
maximum-prefix-sum reading, then the median rule: drop iff candidates are non-empty and median(P'_candidates) >=
median of the P' stored for all previously dropped layers at their drop (-inf before the first drop).

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

Feature store (`FeatureStore`): the maps of the whole training set at the current cut, one array per state
component, on the training device when they fit in `feature_store_max_mb`, else in a numpy memmap under a fresh
temporary directory (`feature_store_dir`, default the system temp dir; also when a device allocation within the
budget runs out of memory), deleted when the store is replaced and at the end of the run (also on errors). Not pickle (the paper's choice): a memmap needs no (de)serialisation.
Codes (`feature_store`): 0 none, 1 device memory, 2 disk memmap; the final metric is the largest code of the run.

Resume (bench/checkpoint.py): after every epoch the run checkpoints the model (BN statistics included), the optimizer
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
import contextlib
import copy
import hashlib
import io
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.data.loader import Batches
from bench.methods import Diverged, merge_options
from bench.methods.layerwise import SpanTimer
from bench.training import Context, EpochTimer, evaluate, make_optimizer, make_scheduler, sync, train_test_batches

MODES = ("learn_drop", "freezing")
RULES = ("eq4", "max_prefix")
STORE_NONE, STORE_DEVICE, STORE_DISK = 0, 1, 2
STD_EPS = 1e-9
STORE_PREFIX = "learn_drop_maps_"  # a disk store's temporary directory: <dir>/<prefix><random>
PHASE_WARMUP, PHASE_IMAGES, PHASE_EXTRACT, PHASE_STORED = 0, 1, 2, 3
DEFAULTS = {"warmup_epochs": 1, "transition_rule": "eq4", "std_ddof": 0, "scored_tensors": "conv_weight",
            "candidates_inclusive": True, "resnet_cut": "conv", "shortcut_position": "last", "decision_pause": True,
            "frozen_eval": True, "feature_store_max_mb": 8192, "feature_store_dir": None,
            "feature_store_dtype": "float32", "forced_drops": {}}


# ---------------------------------------------------------------- scores (pure functions)

def _l1(x) -> float:
    """Sum of absolute values of a tensor, an ndarray, or a list of them (float64)."""
    if isinstance(x, (list, tuple)):
        return float(sum(_l1(t) for t in x))
    if isinstance(x, torch.Tensor):
        return float(x.detach().double().abs().sum())
    return float(np.abs(np.asarray(x, dtype=np.float64)).sum())


def score_from_sums(l1_of_sum: float, abs_sum: float) -> float:
    """P = 1 - l1_of_sum / abs_sum, 1.0 when abs_sum is 0 (no gradient), clamped to [0, 1]."""
    abs_sum = float(abs_sum)
    if abs_sum == 0.0 or not math.isfinite(abs_sum):
        return 1.0 if abs_sum == 0.0 else float("nan")
    return min(1.0, max(0.0, 1.0 - float(l1_of_sum) / abs_sum))


def layer_score(grad_sum, abs_grad_sum) -> float:
    """P_l of Eq. 2 from the two epoch accumulators of layer l.

    grad_sum: the per-weight running sum of the gradients over the epoch's iterations, sum_j g_lij (a tensor or
    ndarray shaped like the weight, or a list of them for a layer with several scored tensors);
    abs_grad_sum: the scalar sum_j sum_i |g_lij| (float, 0-d tensor or ndarray).
    Returns 1 - ||grad_sum||_1 / abs_grad_sum as a float in [0, 1]; 1.0 when abs_grad_sum is 0 (methods.md 5.3
    item 6)."""
    if isinstance(abs_grad_sum, torch.Tensor):
        abs_grad_sum = float(abs_grad_sum.detach().double().sum())
    return score_from_sums(_l1(grad_sum), float(np.sum(abs_grad_sum)))


def standardize(scores, ddof: int = 0) -> np.ndarray:
    """P' of Eq. 3: (P - mean P) / std P over the given layers (sequence of floats -> float64 ndarray).
    std with `ddof` (0: population, numpy's default). When the std is 0 (all scores equal, or one layer) or there
    are not more than ddof scores, every P' is 0 (no layer is 'above' or 'below' the others: no transition).
    "Std 0" means std <= STD_EPS = 1e-9: P lies in [0, 1] and comes from float32 sums, so smaller spreads are
    rounding noise (and would be blown up to +-1 by the division)."""
    p = np.asarray(list(scores), dtype=np.float64)
    if p.size == 0:
        return p
    if p.size <= ddof:
        return np.zeros_like(p)
    std = p.std(ddof=ddof)
    if not std > STD_EPS:  # equal scores up to rounding (np.std of [0.7] * 3 is 1.1e-16, not 0)
        return np.zeros_like(p)
    return (p - p.mean()) / std


def transition_index(std_scores, rule: str = "eq4") -> int | None:
    """n* for the given rule, or None. eq4: the first t in 0..n-2 with P'_t > 0 and P'_{t+1} < 0 (strict).
    max_prefix: the first t in 0..n-2 maximising P'_0 + ... + P'_t, when that sum is > 0 (a non-empty sub-vector
    of positive sum; the last layer excluded as in Eq. 4)."""
    p = [float(v) for v in std_scores]
    if rule == "eq4":
        return next((t for t in range(len(p) - 1) if p[t] > 0 and p[t + 1] < 0), None)
    if rule == "max_prefix":
        if len(p) < 2:
            return None
        prefix = np.cumsum(np.asarray(p[:-1], dtype=np.float64))
        best = int(np.argmax(prefix))
        return best if prefix[best] > 0 else None
    raise ValueError(f"unknown transition_rule '{rule}' ({', '.join(RULES)})")


def select_drop(std_scores, dropped_std_scores=(), rule: str = "eq4", inclusive: bool = True) -> list[int]:
    """Indices (into std_scores: the head's conv layers in order) to drop now; [] for no drop.

    std_scores: P' of the head's conv layers (sequence of floats); dropped_std_scores: the P' stored for every
    previously dropped layer when it was dropped. Candidates: 0..n* (0..n*-1 when not inclusive; eq4 only),
    n* from `transition_index`. Drop iff the candidates are non-empty and median(P'_candidates) >= median
    (dropped_std_scores) (-inf when nothing was dropped yet)."""
    nstar = transition_index(std_scores, rule)
    if nstar is None:
        return []
    count = nstar + 1 if (inclusive or rule != "eq4") else nstar
    if count < 1:
        return []
    p = np.asarray([float(v) for v in std_scores], dtype=np.float64)
    m_c = float(np.median(p[:count]))
    m_d = float(np.median(np.asarray(list(dropped_std_scores), dtype=np.float64))) if len(dropped_std_scores) else -math.inf
    return list(range(count)) if m_c >= m_d else []


# ---------------------------------------------------------------- layers as steps on a state

class BlockStep(nn.Module):
    """A whole block (VGG conv block, ResNet stem) as one layer: (x,) -> (block(x),)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, state: tuple) -> tuple:
        return (self.block(state[0]),)


class ResidualStep(nn.Module):
    """One conv of a `bench.models.resnet.Residual` unit. Inside the unit the state is (main, skip); the unit's
    first step turns (x,) into (x, x), its last step returns (act(main + skip),), exactly Residual.forward's ops."""

    def __init__(self, unit: nn.Module, part, first: bool, last: bool):
        super().__init__()
        self.first, self.last = first, last
        self.is_shortcut = part == "shortcut"
        self.conv = unit.shortcut if self.is_shortcut else unit.convs[part]
        self.act = unit.acts[part] if not self.is_shortcut and part < len(unit.convs) - 1 else None
        self.out_act = unit.acts[-1] if last else None

    def forward(self, state: tuple) -> tuple:
        main, skip = (state[0], state[0]) if self.first else state
        if self.is_shortcut:
            skip = self.conv(skip)
        else:
            main = self.conv(main)
            if self.act is not None:
                main = self.act(main)
        if self.last:
            return (self.out_act(main + skip),)
        return (main, skip)


class Chain(nn.Module):
    """steps[0] -> ... -> steps[-1] [-> classifier]: a tail part (returns the state) or a head (returns logits).
    Called with the state's tensors as arguments (x) or (main, skip)."""

    def __init__(self, steps, classifier: nn.Module | None = None):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.classifier = classifier

    def forward(self, x, skip=None):
        state = (x,) if skip is None else (x, skip)
        for step in self.steps:
            state = step(state)
        if self.classifier is None:
            return state
        return self.classifier(state[0])


@dataclass
class Layer:
    index: int
    name: str
    step: nn.Module
    scored: list           # the conv weights (scored_tensors: conv_weight)
    params: list           # every parameter of the layer
    ends_block: bool       # a cut right after this layer is a block (residual-unit) boundary


def conv_layers(model: nn.Module, shortcut_position: str = "last") -> list[Layer]:
    """The model's conv layers in forward order as steps (module docstring). Checks that the layers and the
    classifier together own every parameter of the model exactly once."""
    from bench.models.resnet import Residual

    if shortcut_position not in ("last", "first"):
        raise ValueError(f"shortcut_position must be 'last' or 'first', got '{shortcut_position}'")
    names = getattr(model, "block_names", [f"block{i}" for i in range(len(model.blocks))])
    layers = []

    def add(name, step, convs, ends):
        layers.append(Layer(len(layers), name, step, [c.weight for c in convs], list(step.parameters()), ends))

    for b, block in enumerate(model.blocks):
        if isinstance(block, Residual):
            parts = list(range(len(block.convs)))
            if any(isinstance(m, nn.Conv2d) for m in block.shortcut.modules()):
                parts = parts + ["shortcut"] if shortcut_position == "last" else ["shortcut"] + parts
            for k, part in enumerate(parts):
                step = ResidualStep(block, part, k == 0, k == len(parts) - 1)
                convs = [m for m in step.conv.modules() if isinstance(m, nn.Conv2d)]
                add(f"{names[b]}.{'shortcut' if part == 'shortcut' else f'conv{part}'}", step, convs,
                    k == len(parts) - 1)
        else:
            convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise ValueError(f"learn_drop: block {names[b]} has no conv layer (unsupported model)")
            add(names[b], BlockStep(block), convs, True)
    owned = [id(p) for layer in layers for p in layer.params] + [id(p) for p in model.head.parameters()]
    if len(owned) != len(set(owned)) or set(owned) != {id(p) for p in model.parameters()}:
        raise ValueError("learn_drop: the conv layers and the head do not partition the model's parameters")
    return layers


def state_shapes(model: nn.Module, layers: list[Layer], device) -> list[list[tuple]]:
    """shapes[k]: the per-sample shapes of the state entering layer k (k = len(layers): the classifier's input).
    One sample of zeros through the steps in eval mode, no grad (nothing in the model changes)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        state = (torch.zeros((1, *model.input_shape), device=device),)
        shapes = [[tuple(t.shape[1:]) for t in state]]
        for layer in layers:
            state = layer.step(state)
            shapes.append([tuple(t.shape[1:]) for t in state])
    model.train(was_training)
    return shapes


def chain_macs(chain: nn.Module, shapes: list[tuple]) -> int:
    """Forward MACs of one sample through `chain` on inputs of the given per-sample shapes, counted by ptflops'
    'pytorch' backend (modules only, as bench.measure.forward_macs); the chain is copied to the CPU in eval mode."""
    from ptflops import get_model_complexity_info

    clone = copy.deepcopy(chain).cpu().eval()
    names = ["x", "skip"][:len(shapes)]

    def make_input(_):
        tensors = [torch.zeros((1, *s)) for s in shapes]
        return tensors[0] if len(tensors) == 1 else dict(zip(names, tensors))

    # with two inputs ptflops gets keyword arguments and prints a warning about the batch size (it is 1)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        macs, _ = get_model_complexity_info(clone, tuple(shapes[0]), as_strings=False, print_per_layer_stat=False,
                                            input_constructor=make_input, backend="pytorch", verbose=False,
                                            backend_specific_config={"count_functional": False})
    if macs is None:
        raise RuntimeError("ptflops could not count the MACs of a Learn & Drop head/tail")
    return int(macs)


# ---------------------------------------------------------------- stored feature maps

class FeatureStore:
    """The state after a cut for every training sample (row i = sample i), one array per state component: a
    device tensor when it fits in `max_mb`, else a numpy memmap in a new temporary directory (removed by close)."""

    def __init__(self, n: int, shapes: list[tuple], dtype: str, device, max_mb: float, directory=None,
                 prefix: str = STORE_PREFIX):
        self.device, self.n = device, n
        self.dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
        self.np_dtype = {"float32": np.float32, "float16": np.float16}[dtype]
        self.bytes = n * sum(int(np.prod(s)) for s in shapes) * np.dtype(self.np_dtype).itemsize
        self.dir = None
        if max_mb < 0:  # `reopen`: the arrays are an existing directory's
            return
        self.kind = STORE_DEVICE if self.bytes <= max_mb * 2**20 else STORE_DISK
        if self.kind == STORE_DEVICE:
            try:
                self.parts = [torch.empty((n, *s), dtype=self.dtype, device=device) for s in shapes]
            except torch.OutOfMemoryError:  # within the budget but not free now: fall back to the disk
                self.parts, self.kind = [], STORE_DISK
        if self.kind == STORE_DISK:
            self.kind = STORE_DISK
            self.dir = tempfile.mkdtemp(prefix=prefix, dir=directory)
            self.parts = [np.lib.format.open_memmap(f"{self.dir}/part{c}.npy", mode="w+", dtype=self.np_dtype,
                                                    shape=(n, *s)) for c, s in enumerate(shapes)]

    @classmethod
    def reopen(cls, directory: str, n: int, shapes: list[tuple], dtype: str, device) -> "FeatureStore | None":
        """The complete disk store that a killed run left in `directory` (read-only), or None when it is gone or
        its arrays have other shapes or dtype."""
        store = cls(n, shapes, dtype, device, max_mb=-1)
        try:
            store.parts = [np.load(f"{directory}/part{c}.npy", mmap_mode="r") for c in range(len(shapes))]
        except (OSError, ValueError):
            return None
        if any(part.shape != (n, *s) or part.dtype != store.np_dtype for part, s in zip(store.parts, shapes)):
            return None
        store.kind, store.dir = STORE_DISK, directory
        return store

    def flush(self) -> None:
        """Write a disk store's pages to its files (before a checkpoint names them)."""
        for part in self.parts if self.kind == STORE_DISK else []:
            part.flush()

    def write(self, idx: torch.Tensor, tensors) -> None:
        if self.kind == STORE_DEVICE:
            idx = idx.to(self.device)
            for part, t in zip(self.parts, tensors):
                part[idx] = t.detach().to(self.dtype)
        else:
            rows = idx.cpu().numpy()
            for part, t in zip(self.parts, tensors):
                part[rows] = t.detach().to(self.dtype).cpu().numpy()

    def read(self, idx: torch.Tensor) -> tuple:
        """float32 tensors on the device, rows in the order of idx."""
        if self.kind == STORE_DEVICE:
            idx = idx.to(self.device)
            return tuple(part[idx].float() for part in self.parts)
        rows = idx.cpu().numpy()
        return tuple(torch.from_numpy(np.ascontiguousarray(part[rows])).to(self.device).float() for part in self.parts)

    def close(self) -> None:
        self.parts = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# ---------------------------------------------------------------- options

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


# ---------------------------------------------------------------- training

class _Scores:
    """Per-weight gradient sums S and scalar |grad| sums A of the head's scored tensors over one epoch."""

    def __init__(self, layers: list[Layer], key: str):
        self.layers = layers
        self.tensors = [t for layer in layers for t in (layer.scored if key == "conv_weight" else layer.params)]
        self.owner = torch.tensor([j for j, layer in enumerate(layers)
                                   for _ in (layer.scored if key == "conv_weight" else layer.params)])
        self.sums = [torch.zeros_like(t) for t in self.tensors]
        self.abs = torch.zeros(len(self.tensors), device=self.tensors[0].device, dtype=torch.float32)
        self.numel = torch.zeros(len(layers), dtype=torch.float64).index_add_(
            0, self.owner, torch.tensor([float(t.numel()) for t in self.tensors], dtype=torch.float64))

    def add(self):
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in self.tensors]
        torch._foreach_add_(self.sums, grads)
        self.abs += torch.stack(torch._foreach_norm(grads, 1)).float()

    def scores(self) -> tuple[list[float], list[float]]:
        """(P, AAPD) per layer, read from the device once."""
        l1 = torch.stack(torch._foreach_norm(self.sums, 1)).double().cpu()
        a = self.abs.double().cpu()
        l1_layer = torch.zeros(len(self.layers), dtype=torch.float64).index_add_(0, self.owner, l1)
        a_layer = torch.zeros(len(self.layers), dtype=torch.float64).index_add_(0, self.owner, a)
        p = [score_from_sums(x, y) for x, y in zip(l1_layer.tolist(), a_layer.tolist())]
        return p, (a_layer / self.numel).tolist()


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

    # a killed run's checkpoint (bench/checkpoint.py): the objects' states, the global RNG states and `st`
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
            source = replay.indexed() if maps is None else _stored_batches(maps, replay)
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
            acc = _Scores(layers[st.cut:], o["scored_tensors"]) if score_now else None
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
                    source = train_batches.indexed() if store is None else _stored_batches(
                        store, train_batches)
                    for idx, inputs, y in ctx.bar(_timed(source, store, dev_io), desc=f"epoch {epoch}", unit="batch"):
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
                    source = _stored_batches(store, train_batches)
                    for idx, inputs, y in ctx.bar(_timed(source, store, dev_io), desc=f"epoch {epoch}", unit="batch"):
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


class _stored_batches:
    """(sample indices, stored maps, labels) of one epoch over a FeatureStore, shuffled with the same draw as
    Batches (one torch.randperm of the run's generator); `host_io` sums the disk reads' seconds."""

    def __init__(self, store: FeatureStore, batches: Batches):
        self.store, self.batches, self.host_io = store, batches, 0.0

    def __iter__(self):
        b = self.batches
        n = len(b.y)
        order = b.epoch_order()
        order_dev = order.to(b.y.device)
        for start in range(0, n, b.batch_size):
            idx = order[start:start + b.batch_size]
            if self.store.kind == STORE_DISK:
                sync(b.y.device)
                t0 = time.perf_counter()
                feats = self.store.read(idx)
                self.host_io += time.perf_counter() - t0
            else:
                feats = self.store.read(order_dev[start:start + b.batch_size])
            yield idx, feats, b.y[order_dev[start:start + b.batch_size]]

    def __len__(self):
        return len(self.batches)


def _timed(source, store, dev_io: SpanTimer):
    """Iterate source, timing the device-store reads with `dev_io` (disk reads time themselves)."""
    if isinstance(source, _stored_batches) and source.store.kind == STORE_DEVICE:
        it = iter(source)
        while True:
            with dev_io.span():
                item = next(it, None)
            if item is None:
                return
            yield item
    else:
        yield from source
