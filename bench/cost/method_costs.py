"""What one run of each method computes, epoch by epoch: the cost model behind `bench plan` (bench/cost/plan.py).

Work (`Work`) is counted per sample as
  macs   forward multiply-accumulates of the conv and linear layers (ptflops' count of the whole model, spread over
         its layers): what a plan without a device counts (the papers' printed times, a given rate);
  secs   forward seconds on a device, measured layer by layer (`time_leaves`: every leaf module of the model, and
         of what the method builds beside it, timed on its own input at the job's batch size): a thin conv, a pool
         or a BN costs what it costs on that device, not what its MACs say;
  reads  elements read back from a cache of features or a store of maps;
and for a pair search (SI's partners over the data) as pairs and pair dims (the N^2 distances and their D terms).
A backward pass through a trained layer costs two forwards (its input's gradient and its weights'), through a frozen
layer that the gradient must still cross one (its input's only), and nothing through a frozen prefix: autograd stops
where nothing before it needs a gradient. A Calibration (bench/cost/plan.py) prices secs or macs, reads, pairs and a
fixed cost per batch (the loss, the optimizer step).

The model's parts (`measure_parts`, once per model config): the work of every block and of the head, each block's
output size, and what the method builds beside the model: PredSim's local similarity convs and decoders,
Belilovsky's auxiliary heads, greedy's temporary linear heads, the Learn & Drop layer chain (its prefix up to every
cut and the state a cut stores) and layer-to-layer's Keras layers.

A run is a list of `Phase`s: epochs that each cost the same. Per method (M: the whole model, b_i: block i, h: the
head, P_i = b_0 + .. + b_{i-1}: the frozen prefix of stage i):
  backprop            train 3M, evaluate M
  predsim             train 3M + 3A (A: the local units' similarity convs and decoders), evaluate M
  predsim sequential  (method_options.schedule) stage j < N of N local-loss units u_0 .. u_{N-1} (a_j: u_j's
                      similarity conv and decoder): u_0 + .. + u_{j-1} forward (frozen, no backward), u_j + a_j
                      trained (3x), nothing after u_j; stage N: every unit forward, the output layer o trained;
                      the stages' epochs from bench.methods.schedule.stage_epochs; evaluate M every epoch
  freezing            with c layers frozen: train 3M - 2F_c (F_c: the frozen layers), evaluate M
  learn_drop          before a drop 3M; the epoch after a drop runs the newly dropped layers once (F_c - F_c') and
                      trains the head on their maps, which it stores (3(M - F_c)); later epochs read the maps and
                      train only the head; the whole model is evaluated after every epoch
  the drop schedule   is what a run did (its epoch records: `drops_from_epochs`); before a run it is unknown, and
                      the plan assumes no drop (an upper bound: Learn & Drop and Freezing as costly as backprop)
  layer-wise stage i  (si_forward, fb_si's SI layers, greedy_layerwise, belilovsky_greedy): the prefix's features
                      of the training and test sets computed once per stage when cached (no augmentation; every
                      batch then reads them), else every epoch; block i and its local head trained (greedy: a
                      linear head; Belilovsky: the aux head; SI: no head, but with partners over the data the
                      anchors' two partners go through the block too, and a pair search per stage: one forward of
                      the set through block i, then N^2 distances of D terms, D the block's output size; with
                      neighbours data_epoch that search every epoch);
                      evaluation: greedy's and Belilovsky's local predictor on the test set every epoch, SI's index
                      on `si_eval_samples` samples every epoch, and the whole model from the prefix at the stage's
                      last epoch (not Belilovsky's)
  classifier stage    (si_forward, greedy_layerwise; fb_si's end-to-end stage from its first non-SI block): the
                      prefix once, then the blocks after it and the head trained (3x) and evaluated every epoch
  layer_to_layer      stage with window [f, l] of the Keras layers: the whole forward, the window's backward (2x)
                      and the input gradients of the frozen layers after it (1x); the whole model evaluated
  recomputation       where the run recomputes its blocks' activations (config activation_checkpointing,
                      bench.cost.resources.recompute_rule): one more forward of the blocks a step trains end to end
                      (backprop, Freezing's and Learn & Drop's full-model epochs, layer-to-layer's crossed layers,
                      the classifier/end-to-end stage), never of the head
Not counted: Learn & Drop's gradient scoring, and the job's start (loading data, starting MLflow, checkpoints).
"""

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.methods import Cost, plan_module
from bench.methods.schedule import stage_epochs
from bench.run.measure import parameter_device

CACHED_BY_DEFAULT = True  # bench.methods.layerwise COMMON_DEFAULTS["cache_prefix"]
# The node a plan assumes for the SI pair search's memory: the papers' GPU class (one 24 GB RTX 3090) and 64 GB of
# host memory, half of each free to the search (bench.methods.si.pair_budget), the device's capped at the config's
# pair_search_max_mb. Where the layer outputs of the training set do not fit, the search reads them again once per
# row panel (bench.methods.si.search_plan): those passes through the prefix and the block are planned.
NODE_GPU_BYTES, NODE_HOST_BYTES = 24e9, 64e9
PAIR_SEARCH_MAX_MB = 8192  # pair_search_max_mb's default (bench.methods.si.SI_DEFAULTS)
PREFIX_CACHE_MAX_MB = 8192  # prefix_cache_max_mb's default (bench.methods.layerwise.COMMON_DEFAULTS)
EVAL_BATCH_SIZE = 512  # the chunks the search reads (bench.methods.layerwise.Run.eval_batch_size's default)


@dataclass(frozen=True)
class Work:
    """Forward MACs, forward seconds (on a device; 0 untimed) and elements read per sample, or, for a pair search,
    its pairs and their dimensions in all."""

    macs: float = 0.0
    secs: float = 0.0
    reads: float = 0.0
    pairs: float = 0.0
    pair_dims: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def __mul__(self, k: float) -> "Work":
        return Work(*(a * k for a in astuple(self)))

    __rmul__ = __mul__


KEYS = ("macs", "secs", "reads", "pairs", "pair_dims")


def astuple(w: Work) -> tuple:
    return tuple(getattr(w, k) for k in KEYS)


@dataclass
class Phase:
    """`epochs` epochs that each cost the same: `train` per training sample (in training batches), `evaluate` per
    test sample (in evaluation batches); once per phase `once_train` per training sample and `once_test` per test
    sample (a cache of features); and `epoch_fixed` every epoch and `once_fixed` once, in all (a pair search, the SI
    index of a subset)."""

    epochs: int
    train: Work
    evaluate: Work
    once_train: Work = field(default_factory=Work)
    once_test: Work = field(default_factory=Work)
    epoch_fixed: Work = field(default_factory=Work)
    once_fixed: Work = field(default_factory=Work)

    def work(self, train_n: int, test_n: int, batch: int, eval_batch: int) -> dict:
        """The phase's work on `train_n` training and `test_n` test samples, in all (KEYS), and its batches."""
        tb, eb = math.ceil(train_n / batch), math.ceil(test_n / eval_batch)
        done = (
            self.epochs * (self.train * train_n + self.evaluate * test_n + self.epoch_fixed)
            + self.once_train * train_n
            + self.once_test * test_n
            + self.once_fixed
        )
        batches = (
            self.epochs * (tb + eb) + (tb if self.once_train != Work() else 0) + (eb if self.once_test != Work() else 0)
        )
        return {**dict(zip(KEYS, astuple(done))), "batches": batches}


# ---------------------------------------------------------------- measuring the model's parts


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not list(m.children())]


def leaf_macs(module: nn.Module, x: torch.Tensor) -> dict:
    """id(leaf) -> forward MACs per sample of every conv and linear leaf module that ran on `x` (a batch of one)."""
    found: dict = {}

    def hook(m, inputs, out):
        if isinstance(m, nn.modules.conv._ConvNd) and isinstance(out, torch.Tensor):
            macs = out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear) and isinstance(out, torch.Tensor):
            macs = out.numel() * m.in_features
        else:
            macs = 0
        found[id(m)] = found.get(id(m), 0) + macs

    handles = [m.register_forward_hook(hook) for m in _leaves(module)]
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return found


# (device, threads, leaf, its inputs) -> (forward, forward + backward) seconds per sample, for this process: the
# same leaf on the same inputs (a ResNet's repeated blocks, the models a profile's variants share) is timed once
_TIMED: dict = {}


def _leaf_signature(m: nn.Module, inputs: tuple, device: torch.device) -> tuple:
    """Everything a leaf's time depends on: its class and settings (repr, plain attributes, parameter and buffer
    shapes and dtypes, training mode), its inputs' shapes and dtypes, the device and the threads torch uses."""
    settings = tuple(sorted((k, v) for k, v in vars(m).items() if isinstance(v, (bool, int, float, str, tuple))))
    tensors = tuple((tuple(t.shape), t.dtype) for t in [*m.parameters(), *m.buffers()])
    shapes = tuple((tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else repr(t) for t in inputs)
    return (str(device), torch.get_num_threads(), type(m).__qualname__, repr(m), settings, tensors, shapes)


def time_leaves(module: nn.Module, x: torch.Tensor, device: torch.device, reps: int = 3) -> dict:
    """id(leaf) -> (forward, forward + backward) seconds per sample of every leaf module of `module` on this
    device: one forward of the batch `x` (training mode, no grad) records every leaf's inputs, then each leaf is
    timed on its own inputs, forward alone (no grad) and forward with the backward of a random output gradient (to
    its weights and its floating-point input), `reps` times after a warm-up, the device synchronised around them,
    divided by the batch size."""
    from bench.methods.training import sync

    calls: list = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append((m, i))) for m in _leaves(module)]
    try:
        with torch.no_grad():
            module.to(device).train()(x.to(device))
    finally:
        for h in handles:
            h.remove()

    def timed(fn) -> float:
        fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        return (time.perf_counter() - start) / reps / len(x)

    found: dict = {}
    for m, inputs in calls:
        key = _leaf_signature(m, inputs, device)
        if key not in _TIMED:
            _TIMED[key] = _time_leaf(m, inputs, timed)
        fwd, both = _TIMED[key]
        old = found.get(id(m), (0.0, 0.0))
        found[id(m)] = (old[0] + fwd, old[1] + both)
    for p in module.parameters():
        p.grad = None
    return found


def _time_leaf(m: nn.Module, inputs: tuple, timed) -> tuple[float, float]:
    """(forward, forward + backward) seconds per sample of one leaf on its recorded inputs (`timed` times a call)."""
    inputs = tuple(
        t.detach().requires_grad_(t.is_floating_point()) if isinstance(t, torch.Tensor) else t for t in inputs
    )
    with torch.no_grad():
        out = m(*inputs)
    grad = torch.randn_like(out) if isinstance(out, torch.Tensor) and out.is_floating_point() else None

    def forward(m=m, inputs=inputs):
        with torch.no_grad():
            m(*inputs)

    inplace = getattr(m, "inplace", False)  # an in-place op may not overwrite a leaf that needs a gradient

    def train(m=m, inputs=inputs, inplace=inplace, grad=grad):
        y = m(*(t.clone() if inplace and isinstance(t, torch.Tensor) else t for t in inputs))
        if grad is not None and y.requires_grad:
            y.backward(grad)

    fwd, both = timed(forward), timed(train)
    return fwd, max(both, fwd)


def _part(module: nn.Module, macs: dict, secs: dict, scale: float) -> list:
    """[forward MACs, forward seconds, training seconds] of a module's leaves."""
    ids = [id(m) for m in module.modules()]
    return [
        scale * sum(macs.get(i, 0) for i in ids),
        sum(secs[i][0] for i in ids if i in secs),
        sum(secs[i][1] for i in ids if i in secs),
    ]


def _side(module: nn.Module, shape: tuple, x_batch: int, device: torch.device | None) -> list:
    """The part of a module the method builds beside the model (an aux head), on inputs of `shape`."""
    macs = leaf_macs(module, torch.zeros((1, *shape), device=parameter_device(module)))
    secs = {}
    if device is not None:
        secs = time_leaves(module, torch.randn((x_batch, *shape)), device)
        module.cpu()
    return _part(module, macs, secs, 1.0)


def measure_parts(
    model: nn.Module, method: str, cfg: dict, total_macs: int, device: torch.device | None = None, batch: int = 128
) -> dict:
    """The parts of `model` (a BlockNet) that the cost of `method` depends on, as plain lists (JSON): blocks, head
    (each [forward MACs, forward seconds, training seconds] per sample), out (each block's output size), classes,
    and per method: aux (PredSim's, Belilovsky's or greedy's local heads, one per unit or block), cuts (Learn &
    Drop / Freezing: the frozen prefix at every cut) with cut_state (the elements a cut stores per sample), layers
    (layer_to_layer's Keras layers).
    PredSim also has units (the model's modules of each local-loss unit, in order) and output (its output layer with
    its parameter-free prefix): they partition the model's blocks and head.
    With a `device`, every leaf is timed there at `batch` (secs); without, secs are 0. Untimed, the model may be on
    the meta device: every count here comes from shapes alone."""
    dtype = getattr(model, "input_dtype", torch.float32)
    home = parameter_device(model)
    if device is not None and home.type == "meta":
        raise ValueError("measure_parts: a model on the meta device cannot be timed")
    x = torch.zeros((1, *model.input_shape), dtype=dtype, device=home)
    shapes = []
    handles = [
        b.register_forward_hook(lambda m, i, o: shapes.append(tuple((o[0] if isinstance(o, tuple) else o).shape[1:])))
        for b in model.blocks
    ]
    try:
        macs = leaf_macs(model, x)
    finally:
        for h in handles:
            h.remove()
    secs = {}
    if device is not None:
        inputs = (
            torch.randint(0, 2, (batch, *model.input_shape))
            if dtype != torch.float32
            else torch.randn((batch, *model.input_shape))
        )
        secs = time_leaves(model, inputs, device)
        model.cpu()
    counted = sum(macs.values())
    scale = total_macs / counted if counted else 1.0  # ptflops also counts BN, activations, pools: spread them
    work = lambda m: _part(m, macs, secs, scale)  # noqa: E731
    parts = {
        "total": float(total_macs),
        "blocks": [work(b) for b in model.blocks],
        "head": work(model.head),
        "out": [math.prod(s) for s in shapes],
        "classes": model.num_classes,
    }
    parts.update(SIDE_PARTS[plan_module(method).COST.parts](model, cfg, work, shapes, batch, device))
    return parts


def _no_side_parts(model, cfg, work, shapes, batch, device) -> dict:
    return {}


def _cut_parts(model, cfg, work, shapes, batch, device) -> dict:
    """Learn & Drop / Freezing: the frozen prefix at every cut (cuts) and the elements a cut stores (cut_state)."""
    from bench.methods.learn_drop.layers import conv_layers, state_shapes

    opts = cfg.get("method_options") or {}
    layers = conv_layers(model, opts.get("shortcut_position", "last"))
    cuts = [[0.0, 0.0, 0.0]]
    for layer in layers:
        cuts.append([a + b for a, b in zip(cuts[-1], work(layer.step))])
    # the elements of the state after each cut (main and skip inside a residual unit): what a stored map holds
    cut_state = [sum(math.prod(s) for s in state) for state in state_shapes(model, layers, parameter_device(model))]
    return {"cuts": cuts, "cut_state": cut_state}


def _keras_layer_parts(model, cfg, work, shapes, batch, device) -> dict:
    """layer_to_layer: its Keras layers (layers)."""
    from bench.methods.layer_to_layer import DEFAULTS, keras_layers

    opts = {**DEFAULTS, **(cfg.get("method_options") or {})}
    layers = keras_layers(model, opts["granularity"], bool(opts["input_layer"]))
    return {"layers": [work(layer.module) for layer in layers]}


def _predsim_parts(model, cfg, work, shapes, batch, device) -> dict:
    """PredSim: its local units' similarity convs and decoders (aux), its units and its output layer."""
    from bench.methods.predsim import PredSim

    sim = PredSim(model, model.num_classes, cfg)
    modules = lambda ms: [sum(col) for col in zip(*map(work, ms))]  # noqa: E731  their summed triples
    return {
        "aux": [_side(a, s, batch, device) for a, s in zip(sim.aux, sim._dry_shapes(parameter_device(model)))],
        "units": [modules(u.modules()) for u in sim.units],
        "output": modules([*sim.out_prefix.mods, sim.out_layer]),
    }


def _aux_head_parts(model, cfg, work, shapes, batch, device) -> dict:
    """Belilovsky: the auxiliary head of every block (aux)."""
    from bench.models import simcnn

    base = (cfg.get("architecture") or {}).get("base", "")
    heads = simcnn.aux_heads(base, model.num_classes, model.input_shape[-1], cfg.get("model") or {})
    return {"aux": [_side(h, s, batch, device) for h, s in zip(heads, shapes)]}


def _linear_head_parts(model, cfg, work, shapes, batch, device) -> dict:
    """greedy: the temporary heads, flatten -> linear on each block's output (aux)."""
    head = lambda s: nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s), model.num_classes))  # noqa: E731
    return {"aux": [_side(head(s), s, batch, device) for s in shapes]}


# what a method builds beside the model (its Cost.parts), measured with it
SIDE_PARTS = {
    "": _no_side_parts,
    "cuts": _cut_parts,
    "keras_layers": _keras_layer_parts,
    "predsim": _predsim_parts,
    "aux_heads": _aux_head_parts,
    "linear_heads": _linear_head_parts,
}


# ---------------------------------------------------------------- phases per method


def drops_from_epochs(epochs: list[dict]) -> list[tuple[int, int]]:
    """[(phase, cut)] per epoch of a Learn & Drop or Freezing run, from its records (phase 0 warm-up, 1 full model,
    2 extraction, 3 stored maps; cut: the layers dropped or frozen during the epoch)."""
    return [(int(e.get("phase", 1)), int(e.get("dropped_layers", 0))) for e in epochs]


@dataclass(frozen=True)
class Part:
    """Some modules' forward MACs, forward seconds and forward + backward seconds per sample (seconds: 0 untimed)."""

    macs: float = 0.0
    fwd: float = 0.0
    both: float = 0.0

    def __add__(self, other: "Part") -> "Part":
        return Part(self.macs + other.macs, self.fwd + other.fwd, self.both + other.both)

    def __sub__(self, other: "Part") -> "Part":
        return Part(self.macs - other.macs, self.fwd - other.fwd, self.both - other.both)


def forward(p: Part) -> Work:
    """Run forward only (frozen, no grad)."""
    return Work(p.macs, p.fwd)


def trained(p: Part) -> Work:
    """Run forward and backward to the weights and the input: 3 forwards' MACs; the measured seconds."""
    return Work(3 * p.macs, p.both)


def crossed(p: Part) -> Work:
    """Frozen, but the gradient crosses it to earlier trained layers: forward and the input's gradient only (2
    forwards' MACs; half the backward's seconds)."""
    return Work(2 * p.macs, (p.fwd + p.both) / 2)


def parts_sum(ps) -> Part:
    return sum(ps, Part())


@dataclass(frozen=True)
class RunShape:
    """What a rule of PHASES reads of a run: the method's Cost and DEFAULTS, the config, the model's parts (blocks
    and head as Parts), the stages' epochs, the training samples, whether they are augmented, and Learn & Drop's or
    Freezing's (phase, cut) per epoch (None: no drop)."""

    cost: Cost
    defaults: dict
    cfg: dict
    parts: dict
    blocks: list
    head: Part
    epochs: list[int]
    train_n: int
    augmented: bool
    drops: list | None
    recompute: bool = False  # the blocks trained end to end recompute their activations (bench.models.recompute)

    @property
    def whole(self) -> Part:
        return parts_sum(self.blocks) + self.head

    @property
    def opts(self) -> dict:
        return self.cfg.get("method_options") or {}

    def recomputed(self, blocks: Part) -> Work:
        """The recomputation's extra forward of the blocks a step trains end to end (BlockNet.run_blocks), where
        the run recomputes; nothing otherwise."""
        return forward(blocks) if self.recompute else Work()


def phases(
    method: str,
    cfg: dict,
    parts: dict,
    train_n: int,
    augmented: bool,
    drops: list[tuple[int, int]] | None = None,
    recompute: bool = False,
) -> list[Phase]:
    """The run's phases, by the rule its method's Cost names. `drops`: Learn & Drop's or Freezing's (phase, cut) per
    epoch, None: no drop. `recompute`: the run recomputes its blocks' activations (one more forward of the blocks
    it trains end to end per step)."""
    blocks = [Part(*b) for b in parts["blocks"]]
    epochs = stage_epochs(
        method, cfg, len(blocks), len(parts.get("layers", [])) or None, n_units=len(parts.get("units", [])) or None
    )
    module = plan_module(method)
    run = RunShape(
        module.COST,
        module.DEFAULTS,
        cfg,
        parts,
        blocks,
        Part(*parts["head"]),
        epochs,
        train_n,
        augmented,
        drops,
        recompute,
    )
    return PHASES[module.COST.phases](run)


def _end_to_end(run: RunShape) -> list[Phase]:
    return [Phase(run.epochs[0], trained(run.whole) + run.recomputed(parts_sum(run.blocks)), forward(run.whole))]


def _predsim(run: RunShape) -> list[Phase]:
    aux = [Part(*a) for a in run.parts["aux"]]
    if run.opts.get("schedule", run.defaults["schedule"]) != "sequential":
        return [Phase(run.epochs[0], trained(run.whole + parts_sum(aux)), forward(run.whole))]
    units, output = [Part(*u) for u in run.parts["units"]], Part(*run.parts["output"])
    return [
        Phase(
            e,
            forward(parts_sum(units[:j])) + (trained(units[j] + aux[j]) if j < len(units) else trained(output)),
            forward(run.whole),
        )
        for j, e in enumerate(run.epochs)
    ]


def _freezing(run: RunShape) -> list[Phase]:
    """Every epoch: the frozen layers forward, the rest trained."""
    cuts = [Part(*c) for c in run.parts["cuts"]]
    out = []
    for _, cut in run.drops or [(1, 0)] * run.epochs[0]:
        frozen = cuts[min(cut, len(cuts) - 1)]
        trained_blocks = parts_sum(run.blocks) - frozen
        out.append(
            Phase(1, forward(frozen) + trained(run.whole - frozen) + run.recomputed(trained_blocks), forward(run.whole))
        )
    return out


def _learn_drop(run: RunShape) -> list[Phase]:
    """The full model trained until a drop; then the dropped layers' maps stored once and read back."""
    cuts, state = [Part(*c) for c in run.parts["cuts"]], run.parts.get("cut_state")
    out, before = [], 0
    for phase, cut in run.drops or [(1, 0)] * run.epochs[0]:
        frozen = cuts[min(cut, len(cuts) - 1)]
        if phase == 2:  # the newly dropped layers once (from the stored maps of the cut before, if any), the head
            # trained on their maps, which are stored
            read = Work(reads=state[before]) if before else Work()
            train = read + forward(frozen - cuts[before]) + trained(run.whole - frozen) + Work(reads=state[cut])
        elif phase == 3:  # the head trained on the stored maps, read back
            train = Work(reads=state[cut]) + trained(run.whole - frozen)
        else:  # the whole model (the head after a drop is a layer chain that keeps its activations)
            train = trained(run.whole) + run.recomputed(parts_sum(run.blocks))
        out.append(Phase(1, train, forward(run.whole)))
        before = cut
    return out


def _layer_to_layer(run: RunShape) -> list[Phase]:
    from bench.methods.layer_to_layer import stage_windows

    layers = [Part(*x) for x in run.parts["layers"]]
    windows = stage_windows(len(layers), len(run.epochs), run.opts.get("window", run.defaults["window"]))
    return [
        Phase(
            e,
            forward(parts_sum(layers[:f]))
            + trained(parts_sum(layers[f : last + 1]))
            + crossed(parts_sum(layers[last + 1 :]))
            + run.recomputed(parts_sum(layers[f:])),  # what the backward crosses (the head's layers too: a margin)
            forward(run.whole),
        )
        for e, (f, last) in zip(run.epochs, windows)
    ]


def search_passes(cfg: dict, points: int, dims: int) -> int:
    """Passes of the SI pair search over `points` layer outputs of `dims` dimensions on the plan's node."""
    from bench.methods.si import search_plan

    cap = float((cfg.get("method_options") or {}).get("pair_search_max_mb", PAIR_SEARCH_MAX_MB)) * 2**20
    plan = search_plan(
        points,
        dims,
        min(points, cfg.get("eval_batch_size", EVAL_BATCH_SIZE)),
        min(cap, 0.5 * NODE_GPU_BYTES),
        0.5 * NODE_HOST_BYTES,
    )
    return max(1, plan["passes"])


def _layerwise(run: RunShape) -> list[Phase]:
    """A stage per block (run.cost: SI's or a local head's), then the classifier's if the method has one."""
    cfg, blocks, head, parts, epochs, train_n, augmented = (
        run.cfg,
        run.blocks,
        run.head,
        run.parts,
        run.epochs,
        run.train_n,
        run.augmented,
    )
    opts = run.opts
    cached = opts.get("cache_prefix", CACHED_BY_DEFAULT)
    exact = cached and not augmented
    si_like = run.cost.si
    neighbours = opts.get("neighbours", "data")
    copies = 3 if si_like and neighbours in ("data", "data_epoch") else 1
    growing = si_like and opts.get("train_scope", "block") == "growing"
    samples = int(opts.get("si_eval_samples", run.defaults.get("si_eval_samples", 0)))
    n_feature = len(epochs) - int(run.cost.classifier_stage)
    whole = parts_sum(blocks) + head
    out = []
    cap = float(opts.get("prefix_cache_max_mb", PREFIX_CACHE_MAX_MB)) * 2**20

    def fits(i):  # the training features after blocks < i fit the cache (bench.methods.layerwise.StageFeatures)
        return i == 0 or train_n * parts["out"][i - 1] * 4 <= cap

    for i in range(n_feature):
        exact = cached and not augmented and (growing or fits(i))  # a cache too large is recomputed every batch
        prefix = Part() if growing else parts_sum(blocks[:i])
        block = parts_sum(blocks[: i + 1]) if growing else blocks[i]
        d = parts["out"][i]
        local = Part(*parts["aux"][i]) if run.cost.parts else Part()
        # cached: every batch gathers its (and its partners') prefix features from the cache
        fed = Work(reads=parts["out"][i - 1]) if i and not growing else Work()
        train = copies * (trained(block + local) + (fed if exact else forward(prefix)))
        # greedy's and Belilovsky's local predictor on the test set every epoch; SI: its index on a subset (below)
        phase = Phase(
            epochs[i],
            train,
            Work() if si_like else forward(block + local) + (fed if cached else forward(prefix)),
            once_train=forward(prefix) if exact else Work(),
            once_test=forward(prefix) if cached else Work(),
        )
        search = Work(pairs=train_n**2, pair_dims=train_n**2 * d)
        # the search's passes over the set through the block: one where the outputs are held, more where they stream
        reread = (search_passes(cfg, train_n, d) - 1) * (forward(block) + (fed if exact else forward(prefix)))
        if si_like and neighbours == "data":  # the pair search once: the set through the block, N^2 distances
            phase.once_train = phase.once_train + forward(block) + reread
            phase.once_fixed = search
        elif si_like and neighbours == "data_epoch":  # the same search at the start of every epoch
            phase.train = phase.train + forward(block) + reread
            phase.epoch_fixed = search
        if samples >= 2:  # the SI index of the trained layer on a subset, every epoch
            phase.epoch_fixed = (
                phase.epoch_fixed + samples * forward(block) + Work(pairs=samples**2, pair_dims=samples**2 * d)
            )
        if run.cost.classifier_stage:  # the whole model from the prefix at the stage's last epoch
            phase.once_test = phase.once_test + forward(whole - prefix)
        out.append(phase)
    if run.cost.classifier_stage:  # the classifier (fb_si: end-to-end) stage on the frozen feature blocks
        exact = cached and not augmented and fits(n_feature)
        prefix = parts_sum(blocks[:n_feature])
        rest = parts_sum(blocks[n_feature:]) + head
        fed = Work(reads=parts["out"][n_feature - 1]) if n_feature else Work()
        out.append(
            Phase(
                epochs[-1],
                trained(rest) + (fed if exact else forward(prefix)) + run.recomputed(parts_sum(blocks[n_feature:])),
                forward(rest) + (fed if cached else forward(prefix)),
                once_train=forward(prefix) if exact else Work(),
                once_test=forward(prefix) if cached else Work(),
            )
        )
    return out


# the cost model's rule for a run's epochs, by the name its method's Cost gives
PHASES = {
    "end_to_end": _end_to_end,
    "predsim": _predsim,
    "freezing": _freezing,
    "learn_drop": _learn_drop,
    "layer_to_layer": _layer_to_layer,
    "layerwise": _layerwise,
}
