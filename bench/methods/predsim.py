"""PredSim local-error learning (Nøkland & Eidnes 2019): the "Layer-wise" column of Ma et al. (docs/methods/predsim.md).

The BlockNet is cut, without changing its classes, into local-loss units, each trained only by its own loss:
  * VGG `ConvBlock` (Sequential conv -> BN -> act -> dropout -> max-pool?) and a ResNet stem: one conv unit. The
    local loss sees the pre-dropout activation h = act(BN(conv(x))); dropout and pooling follow, on h detached.
  * ResNet `Residual` unit: every conv is its own unit (conv -> BN -> act, its dropout on the detached output); in
    the last conv's unit the shortcut is added after the BN and before the activation,
    h = act(BN(conv(x)) + shortcut(x_unit)), so the projection shortcut (1x1 conv + BN) is trained by the gradient
    of that unit's local loss, with its own Adam (as the N&E code; under Adam the same as sharing the unit's).
  * head (`bench.models.common.classifier`): its parameter-free prefix (Flatten, or average pool + Flatten) goes
    with the first unit of the head; every hidden Linear (-> BN1d -> act, dropout on the detached output) is one
    linear unit; the final Linear is the output layer, whose weight is zeroed and which is trained by plain
    cross-entropy on the detached last features with its own Adam.
Each unit owns auxiliary modules, kept here (never registered in the model, so the model's parameter count and
`model(x)` stay those of the architecture): the similarity branch (conv units: Conv2d(C, C, k, pad k // 2, no bias),
k = option similarity_kernel, 3 as in the N&E code for every conv unit, a ResNet-50 bottleneck's 1x1 convs included;
linear units: Linear(D, D, no bias)) and the prediction decoder (conv units: AvgPool sized so that the flattened
map has at most `dim_in_decoder` features, from the unit's real output shape found by a dry forward; then
Linear(-> K) with zero weight). Local loss L = (1-β)·CE(decoder(h), y) + β·mean_ab (S(sim(h)) - S(Y))²_ab.

Training, schedule "simultaneous" (the code's): one forward pass per batch through all units in order; each unit
computes h, backprops its local loss into its own parameters, steps its own Adam at once and passes
tail(h.detach()) on. Every optimizer (units, shortcuts, output layer) has lr = cfg lr and its own MultiStepLR
from the config, stepped once per epoch. Test: the plain `model(x)`, argmax.

Training, schedule "sequential" (Ma et al.'s Algorithm 1 read literally: "the training for layer j is independent,
keeping all other parameters of the remaining layers fixed"; j = 1 .. N: x_{j+1} = W_θj x_j, (θ_j, θ'_j, γ_j) =
argmin R(f_j)): N + 1 stages, N the local-loss units. Stage j < N trains unit j alone, with its own local loss
(the same prediction + similarity loss, β, decoder and similarity branch as above; its shortcut too), on the
output of the units before it, which are frozen: eval mode (dropout off, BN running statistics used and not
updated) and run under torch.no_grad every batch (augmentation stays on, nothing is cached); the units after it
are not run. The last stage trains the output layer with the plain output loss, exactly as "simultaneous" does
(output_loss_scale included), on all the units frozen. Budget: Ma gives no per-layer budget or convergence test,
only "There are 400 training epochs ... the learning rate is multiplied by the decay factors of 0.25 at 50%, 75%,
89%, and 94% of the total training epochs"; that is read as the run's total: cfg epochs are split evenly over the
stages, max(1, epochs // (N+1)) each, the remainder going to the last stages one each, so that they add up to
`epochs` whenever epochs >= N + 1 (fewer: one epoch per stage, N + 1 in all; `bench.methods.schedule.
predsim_stage_epochs`). Each stage has fresh optimizers (those of its unit, or the output layer's: none of them has
stepped before; the config's kind and LR) and its own copy of the LR schedule: every cfg lr_milestones entry m
(in epochs of cfg epochs) maps to round(m * stage_epochs / epochs) (Python's round), kept where 0 < it <
stage_epochs, multiplicity kept (two milestones on one stage epoch decay it by lr_gamma twice, as the whole
schedule compressed does). Class-sampled batches work: classes_per_batch_until_epoch is mapped into every stage
like the milestones (u -> max(1, round(u * stage_epochs / epochs)); 0 still means the whole stage), so every stage
samples classes over the same share of its epochs as the run would. The whole model is evaluated on the test set
after every epoch, as in "simultaneous" (while the output layer is untrained its zero weight predicts class 0).
Resume: the checkpoint after every epoch holds the stage and its epochs done (values `stage`, `stage_epoch`) and
every optimizer and scheduler; a killed run goes on at the next epoch of that stage.

method_options (defaults): beta (0.99), dim_in_decoder (4096), similarity_std (true: per-channel spatial std of
4-D maps with C > 3 and H > 1), schedule ("simultaneous" or "sequential", above), output_loss_scale ("none":
plain CE for the output layer; "one_minus_beta": the code's (1-β)·CE, identical under Adam up to eps),
classes_per_batch (0: uniform shuffled batches; k: every training batch holds
samples of k randomly chosen classes, `bench.data.loader.class_sampled_batches`, drawn from the run's seeded
generator; the N&E code's --classes-per-batch, docs/methods/predsim.md#16-ambiguities item 7) and
classes_per_batch_until_epoch (0: class
sampling for the whole run; u: for epochs 1..u, uniform batches after, as the N&E code; `bench.experiments.config`
scales it with the profile's epochs like the LR milestones).

Per-epoch records: epoch, lr, train_loss (output-layer CE, unscaled), train_accuracy (output layer), local_sim_loss
and local_pred_loss (unscaled sim and pred losses, sample-weighted over the epoch, averaged over the units),
test_loss, test_accuracy, epoch_time_s, eval_time_s. Final metrics: test_accuracy, test_error, test_loss,
train_time_s (training epochs only), the last epoch's train_loss, train_accuracy, local_sim_loss, local_pred_loss,
local_units (number of local-loss units) and aux_params (parameters of the auxiliary sim/pred modules).
Sequential: the same keys, and in every record stage (0-based; N: the output layer) and stage_epoch (1-based in
its stage); epoch counts all stages' epochs. In a unit's stage, train_loss is the local loss it minimises
((1-β)·pred + β·sim) and train_accuracy its prediction decoder's accuracy, local_sim_loss and local_pred_loss its
own; in the output stage train_loss and train_accuracy are the output layer's (as "simultaneous") and the local
losses, no unit being trained, are every unit's values in the last epoch of its stage, averaged over the units:
what the final metrics report.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.loader import check_class_sampling
from bench.methods import Cost, Diverged, merge_options
from bench.methods.offload import StateOffload, offload_setting
from bench.methods.schedule import predsim_stage_epochs
from bench.methods.training import (
    Context,
    EpochTimer,
    compiled_step,
    evaluate,
    fast_settings,
    make_optimizer,
    make_scheduler,
    train_test_batches,
    unique_parameters,
)

DEFAULTS = {
    "beta": 0.99,
    "dim_in_decoder": 4096,
    "similarity_std": True,
    "schedule": "simultaneous",
    "output_loss_scale": "none",
    "classes_per_batch": 0,
    "classes_per_batch_until_epoch": 0,
    "similarity_kernel": 3,
}
SCHEDULES = ("simultaneous", "sequential")
COST = Cost("predsim", parts="predsim", parts_options=("dim_in_decoder",))


def stage_epochs(cfg: dict, n_blocks: int, n_layers: int | None = None, n_units: int | None = None) -> list[int]:
    """Simultaneous: one stage of all the run's epochs; sequential: a stage per local-loss unit (n_units of them),
    then the output layer's (bench.methods.schedule.predsim_stage_epochs)."""
    if (cfg.get("method_options") or {}).get("schedule", DEFAULTS["schedule"]) != "sequential":
        return [cfg["epochs"]]
    if n_units is None:
        raise ValueError(
            "predsim's sequential schedule has a stage per local-loss unit: their number (n_units) is not given"
        )
    return predsim_stage_epochs(cfg["epochs"], n_units)


OUTPUT_LOSS_SCALES = ("none", "one_minus_beta")
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.PReLU)


# ---------------------------------------------------------------- the loss


def similarity_matrix(x: torch.Tensor, std_pool: bool = True) -> torch.Tensor:
    """S(x), B x B: the Pearson correlation between samples (docs/methods/predsim.md#11-one-local-loss-block). A 4-D
    tensor with C > 3 and H > 1 is
    first reduced to its per-channel spatial standard deviation (unbiased) when std_pool; anything else is
    flattened. Rows are centred, divided by (1e-8 + their L2 norm), and S = Z Zᵀ clipped to [-1, 1]."""
    if x.dim() == 4 and std_pool and x.size(1) > 3 and x.size(2) > 1:
        z = x.flatten(2).std(dim=2)
    else:
        z = x.flatten(1)
    z = z - z.mean(dim=1, keepdim=True)
    z = z / (1e-8 + torch.linalg.vector_norm(z, dim=1, keepdim=True))
    return (z @ z.t()).clamp(-1.0, 1.0)


def label_similarity(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """S(one-hot labels): 1 for a pair of the same class, -1/(K-1) otherwise; a constant (no gradient)."""
    return similarity_matrix(F.one_hot(labels, num_classes).float()).detach()


def predsim_loss(
    sim_input: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    beta: float = 0.99,
    *,
    std_pool: bool = True,
    target_sim: torch.Tensor | None = None,
):
    """(loss, sim_loss, pred_loss): sim_loss = mean over the B² entries of (S(sim_input) - S(Y))², pred_loss =
    mean cross-entropy of logits, loss = (1-β)·pred_loss + β·sim_loss. target_sim: a precomputed S(Y)."""
    if target_sim is None:
        target_sim = label_similarity(labels, num_classes)
    sim_loss = F.mse_loss(similarity_matrix(sim_input, std_pool=std_pool), target_sim)
    pred_loss = F.cross_entropy(logits, labels)
    return (1.0 - beta) * pred_loss + beta * sim_loss, sim_loss, pred_loss


# ---------------------------------------------------------------- auxiliary branches


def decoder_pool_size(channels: int, height: int, width: int, dim_in_decoder: int):
    """((kh, kw), (ph, pw)): the average-pool kernel and padding of the prediction branch, as the N&E code picks
    it: from (1, 1), double the kernel height and then, if still too big, the width, until channels x pooled
    height x pooled width <= dim_in_decoder (or the kernel height reaches the map height); pooled sizes are
    ceil(size / kernel), reached with zero padding. Sized from the real (H, W), not a nominal resolution."""
    kh = kw = 1
    oh, ow = height, width
    while channels * oh * ow > dim_in_decoder and kh < height:
        kh *= 2
        oh = math.ceil(height / kh)
        if channels * oh * ow > dim_in_decoder and kw < width:
            kw *= 2
            ow = math.ceil(width / kw)
    ph = (kh * (oh - height // kh)) // 2
    pw = (kw * (ow - width // kw)) // 2
    return (kh, kw), (ph, pw)


class Aux(nn.Module):
    """One unit's similarity branch and prediction decoder, for its local activation h of shape `shape` (C, H, W)
    or (D,)."""

    def __init__(self, shape: tuple, num_classes: int, dim_in_decoder: int, similarity_kernel: int = 3):
        super().__init__()
        if len(shape) == 3:
            c, h, w = shape
            k = similarity_kernel
            self.sim = nn.Conv2d(c, c, k, stride=1, padding=k // 2, bias=False)
            kernel, padding = decoder_pool_size(c, h, w, dim_in_decoder)
            self.pool = nn.AvgPool2d(kernel, padding=padding) if kernel != (1, 1) else nn.Identity()
            with torch.no_grad():
                features = self.pool(torch.zeros(1, c, h, w)).numel()
        elif len(shape) == 1:
            self.sim = nn.Linear(shape[0], shape[0], bias=False)
            self.pool = nn.Identity()
            features = shape[0]
        else:
            raise ValueError(f"local activation of shape {shape}: expected (C, H, W) or (D,)")
        self.decoder = nn.Linear(features, num_classes)
        nn.init.zeros_(self.decoder.weight)

    def forward(self, h):
        return self.sim(h), self.decoder(self.pool(h).flatten(1))


# ---------------------------------------------------------------- units


class _Chain:
    """The model's modules applied in order: a plain callable, so nothing gets registered twice."""

    def __init__(self, modules):
        self.mods = list(modules)

    def __call__(self, x):
        for m in self.mods:
            x = m(x)
        return x


@dataclass(eq=False)
class LocalUnit:
    """One local-loss unit. h = post(pre(x) [+ shortcut(skip)]) is what the local loss sees (skip: the input of
    the unit's BlockNet block, used only by the last conv of a residual unit); tail(h.detach()) is what is passed
    on. optimizers[0] is over `params` + the aux parameters; the last conv of a residual unit with a projection
    shortcut has optimizers[1] over `shortcut_params`."""

    name: str
    pre: _Chain  # x -> before the residual add (all of h when there is no shortcut)
    post: _Chain  # (pre + shortcut) -> h: the activation (empty when there is no shortcut)
    tail: _Chain  # h.detach() -> output passed on
    shortcut: nn.Module | None = None
    starts_block: bool = False  # the input of this unit is the input of a BlockNet block (skip source)
    params: list = field(default_factory=list)
    shortcut_params: list = field(default_factory=list)
    aux: Aux | None = None
    optimizers: list = field(default_factory=list)

    def activation(self, x, skip):
        z = self.pre(x)
        if self.shortcut is not None:
            z = z + self.shortcut(skip)
        return self.post(z)

    def modules(self) -> list[nn.Module]:
        """The model's modules this unit runs (its shortcut included)."""
        return self.pre.mods + self.post.mods + self.tail.mods + ([self.shortcut] if self.shortcut is not None else [])


def _split_after_activation(modules: list, what: str):
    """(up to and including the last activation, the rest); the rest must have no parameters."""
    idx = [i for i, m in enumerate(modules) if isinstance(m, ACTIVATIONS)]
    if not idx:
        raise ValueError(f"{what}: no activation module found, cannot place the local loss")
    k = idx[-1] + 1
    body, tail = modules[:k], modules[k:]
    if unique_parameters(tail):
        raise ValueError(f"{what}: parameters after the activation ({[type(m).__name__ for m in tail]})")
    return body, tail


def _block_units(i: int, block: nn.Module) -> list[LocalUnit]:
    from bench.models.resnet import Residual

    name = f"block{i}"
    if isinstance(block, Residual):
        units = []
        n = len(block.convs)
        for j, (conv, act) in enumerate(zip(block.convs, block.acts)):
            act_part, drop_part = _split_after_activation(list(act), f"{name}.acts[{j}]")
            last = j == n - 1
            shortcut = block.shortcut if last else None
            units.append(
                LocalUnit(
                    f"{name}.conv{j}",
                    _Chain([conv]),
                    _Chain(act_part),
                    _Chain(drop_part),
                    shortcut=shortcut,
                    starts_block=j == 0,
                    params=unique_parameters([conv]),
                    shortcut_params=unique_parameters([shortcut]) if last else [],
                )
            )
        return units
    if isinstance(block, nn.Sequential):
        body, tail = _split_after_activation(list(block), name)
        if not any(isinstance(m, nn.Conv2d) for b in body for m in b.modules()):
            raise ValueError(f"{name}: no Conv2d before the activation")
        return [
            LocalUnit(name, _Chain(body), _Chain([]), _Chain(tail), starts_block=True, params=unique_parameters(body))
        ]
    raise ValueError(
        f"{name}: {type(block).__name__} blocks are not supported (VGG-style conv Sequentials and "
        "ResNet Residual units are)"
    )


def unit_count(model: nn.Module) -> int:
    """How many local-loss units PredSim splits this model into (the sequential schedule's stages, less the output
    layer's)."""
    return sum(len(_block_units(i, block)) for i, block in enumerate(model.blocks)) + len(_head_units(model.head)[0])


def _head_units(head: nn.Module):
    """(hidden linear units, output Linear, the output layer's parameter-free prefix: the head's pooling/flatten
    when there is no hidden layer, else nothing)."""
    if not isinstance(head, nn.Sequential):
        raise ValueError(f"head: {type(head).__name__} is not supported (an nn.Sequential classifier is)")
    mods = list(head)
    linear = [k for k, m in enumerate(mods) if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("head: no Linear layer")
    out_idx = linear[-1]
    if mods[out_idx + 1 :]:
        raise ValueError("head: modules after the output Linear")
    prefix = mods[: linear[0]]
    if unique_parameters(prefix):
        raise ValueError("head: parameters before the first Linear")
    units = []
    for n, (a, b) in enumerate(zip(linear[:-1], linear[1:])):
        body, tail = _split_after_activation(mods[a:b], f"head.fc{n}")
        body = (prefix if n == 0 else []) + body
        units.append(LocalUnit(f"head.fc{n}", _Chain(body), _Chain([]), _Chain(tail), params=unique_parameters(body)))
    out_prefix = _Chain([] if units else prefix)
    return units, mods[out_idx], out_prefix


# ---------------------------------------------------------------- the trainer


@dataclass
class StepResult:
    logits: torch.Tensor  # output layer, detached
    output_loss: torch.Tensor  # plain CE of the output layer, detached
    sim_losses: torch.Tensor  # (units,), unscaled, detached
    pred_losses: torch.Tensor  # (units,), unscaled, detached


def stage_milestones(milestones, epochs: int, stage_epochs: int) -> list[int]:
    """A sequential stage's copy of the LR schedule: every milestone m (in epochs of the run's `epochs`) at
    round(m * stage_epochs / epochs), kept where 0 < it < stage_epochs; repeats are kept (MultiStepLR then decays
    twice at that epoch, as the whole schedule compressed into the stage does)."""
    mapped = (round(m * stage_epochs / epochs) for m in milestones)
    return [v for v in mapped if 0 < v < stage_epochs]


def stage_until(until: int, epochs: int, stage_epochs: int) -> int:
    """classes_per_batch_until_epoch mapped into a sequential stage like the milestones (0: the whole stage)."""
    return 0 if until == 0 else max(1, round(until * stage_epochs / epochs))


def options(cfg: dict) -> dict:
    from bench import BenchError

    opts = merge_options(cfg, DEFAULTS, "predsim", BenchError)
    if opts["schedule"] not in SCHEDULES:
        raise BenchError(
            f"predsim schedule '{opts['schedule']}': expected one of {list(SCHEDULES)} (simultaneous: every "
            "local-loss unit trained at once, one forward pass per batch, as anokland/local-loss does; sequential: "
            "Ma et al.'s Algorithm 1, unit after unit on the frozen units before it, then the output layer, the "
            "run's epochs split evenly over the stages)"
        )
    if opts["output_loss_scale"] not in OUTPUT_LOSS_SCALES:
        raise BenchError(
            f"predsim output_loss_scale '{opts['output_loss_scale']}': expected one of {list(OUTPUT_LOSS_SCALES)}"
        )
    if not 0.0 <= float(opts["beta"]) <= 1.0:
        raise BenchError(f"predsim beta {opts['beta']} is not in [0, 1]")
    if int(opts["dim_in_decoder"]) < 1:
        raise BenchError(f"predsim dim_in_decoder {opts['dim_in_decoder']} must be positive")
    try:
        check_class_sampling(opts["classes_per_batch"], opts["classes_per_batch_until_epoch"])
    except ValueError as err:
        raise BenchError(f"predsim {err}") from None
    opts["beta"], opts["dim_in_decoder"] = float(opts["beta"]), int(opts["dim_in_decoder"])
    opts["similarity_std"] = bool(opts["similarity_std"])
    kernel = opts["similarity_kernel"]
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise BenchError(
            f"predsim similarity_kernel {kernel!r}: expected an odd positive integer (the similarity "
            "branch's conv keeps the map's size with padding kernel // 2)"
        )
    return opts


class PredSim:
    """The local-loss decomposition of a BlockNet, its auxiliary modules and optimizers, and one training step.

    `units` (in forward order), `aux` (nn.ModuleList, one Aux per unit, not part of the model), `out_layer` (the
    model's output Linear, weight zeroed), `out_optimizer`, `optimizers()` [(name, optimizer)] and the matching
    `schedulers`."""

    def __init__(self, model: nn.Module, num_classes: int, cfg: dict, opts: dict | None = None):
        from bench import BenchError

        self.model, self.num_classes, self.cfg = model, num_classes, cfg
        self.opts = opts if opts is not None else options(cfg)
        try:
            units = [u for i, block in enumerate(model.blocks) for u in _block_units(i, block)]
            head_units, self.out_layer, self.out_prefix = _head_units(model.head)
        except ValueError as err:
            raise BenchError(f"predsim cannot split this model into local-loss units: {err}") from err
        self.units = units + head_units
        device = next(model.parameters()).device
        shapes = self._dry_shapes(device)
        self.aux = nn.ModuleList(
            Aux(s, num_classes, self.opts["dim_in_decoder"], self.opts["similarity_kernel"]) for s in shapes
        ).to(device)
        for u, a in zip(self.units, self.aux):
            u.aux = a
            u.optimizers = [make_optimizer(u.params + list(a.parameters()), cfg)]
            if u.shortcut_params:
                u.optimizers.append(make_optimizer(u.shortcut_params, cfg))
        with torch.no_grad():
            self.out_layer.weight.zero_()
        self.out_optimizer = make_optimizer(self.out_layer.parameters(), cfg)
        self.offload: StateOffload | None = None
        self.use_memory(False, [])
        self.sequential = self.opts["schedule"] == "sequential"
        if self.sequential:  # stage s trains unit s (s < N) or the output layer (s = N), with its copy of the schedule
            epochs = int(cfg["epochs"])
            self.stage_epochs = predsim_stage_epochs(epochs, len(self.units))
            self.schedulers = [
                make_scheduler(
                    opt,
                    {
                        **cfg,
                        "lr_milestones": stage_milestones(cfg.get("lr_milestones", []), epochs, self.stage_epochs[s]),
                    },
                )
                for s, opt in self._optimizer_stages()
            ]
        else:
            self.stage_epochs = None
            self.schedulers = [make_scheduler(opt, cfg) for _, opt in self.optimizers()]
        self._check_partition()

    def _dry_shapes(self, device) -> list[tuple]:
        """Each unit's local activation shape (without the batch), from a forward pass of 2 zero samples in eval
        mode (running statistics untouched)."""
        was = self.model.training
        self.model.eval()
        shapes = []
        try:
            with torch.no_grad():
                x = torch.zeros(2, *self.model.input_shape, dtype=self.model.input_dtype, device=device)
                skip = x
                for u in self.units:
                    if u.starts_block:
                        skip = x
                    h = u.activation(x, skip)
                    shapes.append(tuple(h.shape[1:]))
                    x = u.tail(h)
        finally:
            self.model.train(was)
        return shapes

    def _check_partition(self):
        from bench import BenchError

        seen = {}
        for name, opt in self.optimizers():
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise BenchError(f"predsim: a parameter is in two optimizers ({seen[id(p)]}, {name})")
                    seen[id(p)] = name
        missing = [n for n, p in self.model.named_parameters() if id(p) not in seen]
        if missing:
            raise BenchError(f"predsim: model parameters in no local unit: {missing[:5]}")

    def use_memory(self, free_grads: bool, offloaded: list[int]):
        """Free each unit's gradients right after its own step (`free_grads`), and keep the optimizer states of
        the units `offloaded` (indices) on the host between their steps (bench.methods.offload); call it before
        any step or checkpoint restore. The default: neither."""
        self.free_grads = free_grads
        if self.offload is not None:
            self.offload.close()
        device = next(self.model.parameters()).device
        self.offload = StateOffload({i: self.units[i].optimizers for i in offloaded}, device)

    def optimizers(self) -> list[tuple[str, torch.optim.Optimizer]]:
        out = []
        for u in self.units:
            out.append((u.name, u.optimizers[0]))
            out += [(f"{u.name}.shortcut", opt) for opt in u.optimizers[1:]]
        out.append(("output", self.out_optimizer))
        return out

    def _optimizer_stages(self) -> list[tuple[int, torch.optim.Optimizer]]:
        """(sequential stage, optimizer) in the order of `optimizers()`: unit j's are stage j's, the output's N's."""
        out = [(j, opt) for j, u in enumerate(self.units) for opt in u.optimizers]
        return out + [(len(self.units), self.out_optimizer)]

    def stage_optimizers(self, stage: int) -> list[torch.optim.Optimizer]:
        return self.units[stage].optimizers if stage < len(self.units) else [self.out_optimizer]

    def stage_schedulers(self, stage: int) -> list:
        return [sched for (s, _), sched in zip(self._optimizer_stages(), self.schedulers) if s == stage]

    def train(self, mode: bool = True):
        self.model.train(mode)
        self.aux.train(mode)

    def stage_modes(self, stage: int):
        """Sequential stage `stage`: everything in eval mode but unit `stage` and its aux modules (none in the
        output layer's stage: the output Linear and its parameter-free prefix have no mode)."""
        self.train(False)
        if stage < len(self.units):
            for m in self.units[stage].modules():
                m.train()
            self.aux[stage].train()

    def step_schedulers(self):
        for s in self.schedulers:
            s.step()

    def forward_units(self, x):
        """The network's output through the units (no training): equals model(x)."""
        skip = x
        for u in self.units:
            if u.starts_block:
                skip = x
            x = u.tail(u.activation(x, skip))
        return self.out_layer(self.out_prefix(x))

    def unit_loss(self, u: LocalUnit, x, skip, y, target_sim=None):
        """(output passed on (detached), local loss, sim loss, pred loss) of unit u for input x; `skip` is the
        input of u's BlockNet block (used by a residual unit's last conv)."""
        h = u.activation(x, skip)
        out = u.tail(h.detach())
        sim_in, logits = u.aux(h)
        loss, sim, pred = predsim_loss(
            sim_in,
            logits,
            y,
            self.num_classes,
            self.opts["beta"],
            std_pool=self.opts["similarity_std"],
            target_sim=target_sim,
        )
        return out, loss, sim, pred

    @torch.no_grad()
    def frozen_prefix(self, j: int, x):
        """(input of unit j, the input of its BlockNet block) through the units before j, without gradient; for
        j = N (the number of units): (the last hidden features, their block's input)."""
        skip = x
        for u in self.units[:j]:
            if u.starts_block:
                skip = x
            x = u.tail(u.activation(x, skip))
        if j < len(self.units) and self.units[j].starts_block:
            skip = x
        return x, skip

    def stage_step(self, stage: int, x, y) -> StepResult:
        """One batch of sequential stage `stage`: the units before it forward under no_grad (frozen), then unit
        `stage` takes one step on its local loss (StepResult: its decoder's logits, its local loss as output_loss,
        its sim and pred losses, one each), or, in the last stage, the output layer one step on its loss as in
        train_step (logits and plain CE; no local losses). The units after it are not run."""
        x, skip = self.frozen_prefix(stage, x)
        if stage == len(self.units):
            logits, ce, loss = self.output_loss(x, y)
            self.out_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.out_optimizer.step()
            none = torch.zeros(0, device=ce.device)
            return StepResult(logits.detach(), ce.detach(), none, none)
        u = self.units[stage]
        sim_in, logits = u.aux(u.activation(x, skip))
        loss, sim, pred = predsim_loss(
            sim_in, logits, y, self.num_classes, self.opts["beta"], std_pool=self.opts["similarity_std"]
        )
        self.step_unit(stage, loss)
        return StepResult(logits.detach(), loss.detach(), sim.detach()[None], pred.detach()[None])

    def output_loss(self, features, y):
        """(logits, plain CE, the loss the output layer is trained on) for the last hidden features."""
        logits = self.out_layer(self.out_prefix(features.detach()))
        ce = F.cross_entropy(logits, y)
        scale = 1.0 - self.opts["beta"] if self.opts["output_loss_scale"] == "one_minus_beta" else 1.0
        return logits, ce, ce * scale if scale != 1.0 else ce

    def step_unit(self, i: int, loss):
        """Unit i's backward and optimizer step(s). Its gradients are zeroed before the backward, not after, so
        they stay readable after the step, unless memory asks (`free_grads`: freed right after it, the device then
        holds one unit's); its optimizer states come from the host and go back where it is offloaded."""
        u = self.units[i]
        for opt in u.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self.offload.before(i)
        for opt in u.optimizers:
            opt.step()
        self.offload.after(i)
        if self.free_grads:
            for opt in u.optimizers:
                opt.zero_grad(set_to_none=True)

    def train_step(self, x, y) -> StepResult:
        """One batch: every unit in turn computes its local loss, backprops it into its own parameters and steps
        its own optimizer(s) (`step_unit`); then the output layer takes one CE step on the detached features."""
        target_sim = label_similarity(y, self.num_classes)
        sims, preds = [], []
        skip = x
        for i, u in enumerate(self.units):
            if u.starts_block:
                skip = x
            out, loss, sim, pred = self.unit_loss(u, x, skip, y, target_sim)
            self.step_unit(i, loss)
            sims.append(sim.detach())
            preds.append(pred.detach())
            x = out
        logits, ce, loss = self.output_loss(x, y)
        self.out_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.out_optimizer.step()
        return StepResult(logits.detach(), ce.detach(), torch.stack(sims), torch.stack(preds))


# ---------------------------------------------------------------- the method


def class_sampling(opts: dict, epoch: int) -> int:
    """Classes per training batch in 0-based `epoch` (0: uniform batches): classes_per_batch for epochs
    0..until-1 (the N&E code's 1-based epochs 1..until), for every epoch when until is 0."""
    until = opts["classes_per_batch_until_epoch"]
    return opts["classes_per_batch"] if until == 0 or epoch < until else 0


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    opts = options(cfg)
    device = ctx.device
    train_batches, test_batches = train_test_batches(data, cfg, device, ctx.seed)
    if opts["classes_per_batch"] >= data.num_classes:
        from bench import BenchError

        raise BenchError(
            f"predsim classes_per_batch {opts['classes_per_batch']} is not below the dataset's "
            f"{data.num_classes} classes: every batch could hold every class"
        )
    ps = PredSim(model, data.num_classes, cfg, opts)
    use_run_memory(ps, cfg, ctx)
    compile_steps(ps, cfg, device)
    if ps.sequential:
        return train_sequential(ps, data, cfg, ctx, train_batches, test_batches)
    n_units = len(ps.units)
    n = len(data.y_train)
    state = checkpointed(ps, train_batches)
    done = {"train_time": 0.0, "test_loss": float("nan"), "test_acc": float("nan"), "final": {}}
    start = ctx.resume(state, done)
    train_time, test_loss, test_acc, final = done["train_time"], done["test_loss"], done["test_acc"], done["final"]
    for epoch in ctx.bar(range(start, cfg["epochs"]), desc=cfg["experiment"], unit="epoch"):
        ps.train()
        train_batches.classes_per_batch = class_sampling(opts, epoch)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        sim_sum = torch.zeros(n_units, device=device)
        pred_sum = torch.zeros(n_units, device=device)
        lr = ps.out_optimizer.param_groups[0]["lr"]
        with EpochTimer(device) as timer:
            for x, y in ctx.bar(train_batches, desc=f"epoch {epoch + 1}", unit="batch"):
                r = ps.train_step(x, y)
                loss_sum += r.output_loss * len(y)
                correct += (r.logits.argmax(1) == y).sum()
                sim_sum += r.sim_losses * len(y)
                pred_sum += r.pred_losses * len(y)
            ps.step_schedulers()
        train_time += timer.seconds
        with EpochTimer(device) as eval_timer:
            test_loss, test_acc = evaluate(model, test_batches, device)
        train_loss = loss_sum.item() / n
        sim_mean = sim_sum.mean().item() / n
        pred_mean = pred_sum.mean().item() / n
        final = {
            "train_loss": train_loss,
            "train_accuracy": 100.0 * correct.item() / n,
            "local_sim_loss": sim_mean,
            "local_pred_loss": pred_mean,
        }
        ctx.log_epoch(
            {
                "epoch": epoch + 1,
                "lr": lr,
                **final,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "epoch_time_s": timer.seconds,
                "eval_time_s": eval_timer.seconds,
            }
        )
        bad = [k for k, v in final.items() if not math.isfinite(v)]
        if bad:
            raise Diverged(epoch + 1, ", ".join(f"{k} {final[k]}" for k in bad))
        ctx.epoch_done(
            epoch + 1, state, {"train_time": train_time, "test_loss": test_loss, "test_acc": test_acc, "final": final}
        )
    return final_metrics(ps, test_acc, test_loss, train_time, final)


def use_run_memory(ps: PredSim, cfg: dict, ctx: Context):
    """The run's optimizer_offload as bench.run.runner resolved and recorded it (ctx.settings: whether gradients
    are freed, the units offloaded by name); without it (a test, a direct call) the config's on or off, auto being
    off (no free memory was measured)."""
    if "optimizer_offload" in ctx.settings:
        on, names = ctx.settings["optimizer_offload"], ctx.settings["optimizer_offload_units"]
    else:
        on = offload_setting(cfg) == "on"
        names = [u.name for u in ps.units] if on else []
    index = {u.name: i for i, u in enumerate(ps.units)}
    ps.use_memory(bool(on), [index[name] for name in names])


def compile_steps(ps: PredSim, cfg: dict, device: torch.device):
    """Under `compile_step`, ps.train_step and ps.stage_step compiled whole (training.compiled_step), in place as
    compile_forward does with a model's forward. Compiled autograd: the steps loop over units and optimizers, and
    a graph break in a loop (the optimizers' steps always break the graph) runs that frame eagerly; the calls it
    makes are compiled one by one: each unit's forward and local loss, its backward, its optimizers' steps."""
    fast = fast_settings(cfg, device)
    ps.train_step = compiled_step(ps.train_step, fast, autograd="compiled")
    ps.stage_step = compiled_step(ps.stage_step, fast, autograd="compiled")


def checkpointed(ps: PredSim, train_batches) -> dict:
    """What the per-epoch checkpoint saves: the model, the aux modules, the batches' generator, every optimizer and
    scheduler."""
    return {
        "model": ps.model,
        "aux": ps.aux,
        "batches": train_batches.gen,
        **{f"optimizer:{name}": opt for name, opt in ps.optimizers()},
        **{f"scheduler:{i}": sched for i, sched in enumerate(ps.schedulers)},
    }


def final_metrics(ps: PredSim, test_acc: float, test_loss: float, train_time: float, final: dict) -> dict:
    return {
        "test_accuracy": test_acc,
        "test_error": 100.0 - test_acc,
        "test_loss": test_loss,
        "train_time_s": train_time,
        **final,
        "local_units": float(len(ps.units)),
        "aux_params": float(sum(p.numel() for p in ps.aux.parameters())),
    }


def sequential_progress(n_units: int) -> dict:
    """What schedule "sequential" carries, saved in every per-epoch checkpoint: the training time, the last test
    metrics and epoch metrics, the stage and the epochs done in it, each unit's local losses at its stage's end."""
    return {
        "train_time": 0.0,
        "test_loss": float("nan"),
        "test_acc": float("nan"),
        "final": {},
        "stage": 0,
        "stage_epoch": 0,
        "unit_sim": [float("nan")] * n_units,
        "unit_pred": [float("nan")] * n_units,
    }


def resume_sequential(ps: PredSim, ctx: Context, state: dict, done: dict) -> int:
    """Restore a killed run's last checkpoint into `state` and `done`; the epochs done (0: none), checked against
    the stage and stage epoch the checkpoint saved."""
    from bench import BenchError

    start = ctx.resume(state, done)
    stage, stage_epoch = int(done["stage"]), int(done["stage_epoch"])  # the last epoch's stage, its epochs done
    if stage < len(ps.stage_epochs) and stage_epoch == ps.stage_epochs[stage]:
        stage, stage_epoch = stage + 1, 0
    if sum(ps.stage_epochs[:stage]) + stage_epoch != start:
        raise BenchError(
            f"predsim: the checkpoint's stage {stage} epoch {stage_epoch} is not its epoch {start} of "
            f"the stages' {ps.stage_epochs}"
        )
    return start


def sequential_stage_epoch(ps: PredSim, ctx: Context, train_batches, stage: int, stage_epoch: int):
    """One training epoch of stage `stage` (its modes and class sampling already set); ((summed output loss,
    correct predictions, summed similarity loss, summed prediction loss), the learning rate, training seconds)."""
    device, n_units = ctx.device, len(ps.units)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    sim_sum = torch.zeros((), device=device)
    pred_sum = torch.zeros((), device=device)
    lr = ps.stage_optimizers(stage)[0].param_groups[0]["lr"]
    with EpochTimer(device) as timer:
        desc = f"stage {stage + 1}/{n_units + 1} epoch {stage_epoch + 1}"
        for x, y in ctx.bar(train_batches, desc=desc, unit="batch"):
            r = ps.stage_step(stage, x, y)
            loss_sum += r.output_loss * len(y)
            correct += (r.logits.argmax(1) == y).sum()
            if stage < n_units:
                sim_sum += r.sim_losses[0] * len(y)
                pred_sum += r.pred_losses[0] * len(y)
        for sched in ps.stage_schedulers(stage):
            sched.step()
    return (loss_sum, correct, sim_sum, pred_sum), lr, timer.seconds


def sequential_epoch_metrics(sums: tuple, stage: int, n: int, n_units: int, unit_sim: list, unit_pred: list) -> dict:
    """The epoch's training metrics over n samples; a unit's stage records its local losses in unit_sim/unit_pred,
    the output layer's stage (no unit trains) reports their average."""
    loss_sum, correct, sim_sum, pred_sum = sums
    if stage < n_units:
        unit_sim[stage], unit_pred[stage] = sim_sum.item() / n, pred_sum.item() / n
        sim_mean, pred_mean = unit_sim[stage], unit_pred[stage]
    else:  # no unit trains: each unit's values at the end of its stage, averaged
        sim_mean, pred_mean = sum(unit_sim) / n_units, sum(unit_pred) / n_units
    return {
        "train_loss": loss_sum.item() / n,
        "train_accuracy": 100.0 * correct.item() / n,
        "local_sim_loss": sim_mean,
        "local_pred_loss": pred_mean,
    }


def train_sequential(ps: PredSim, data, cfg: dict, ctx: Context, train_batches, test_batches) -> dict:
    """Schedule "sequential" (the module's docstring): stage j < N trains unit j on the frozen units before it,
    stage N the output layer on all of them; ps.stage_epochs epochs each, one epoch loop over all stages."""
    model, device, opts = ps.model, ctx.device, ps.opts
    n_units, n, epochs = len(ps.units), len(data.y_train), int(cfg["epochs"])
    plan = [(s, e) for s, k in enumerate(ps.stage_epochs) for e in range(k)]  # (stage, stage epoch) per epoch
    sampling = [
        {**opts, "classes_per_batch_until_epoch": stage_until(opts["classes_per_batch_until_epoch"], epochs, k)}
        for k in ps.stage_epochs
    ]
    state = checkpointed(ps, train_batches)
    done = sequential_progress(n_units)
    start = resume_sequential(ps, ctx, state, done)
    train_time, test_loss, test_acc, final = done["train_time"], done["test_loss"], done["test_acc"], done["final"]
    unit_sim, unit_pred = list(done["unit_sim"]), list(done["unit_pred"])
    for epoch in ctx.bar(range(start, len(plan)), desc=cfg["experiment"], unit="epoch"):
        stage, stage_epoch = plan[epoch]
        ps.stage_modes(stage)
        train_batches.classes_per_batch = class_sampling(sampling[stage], stage_epoch)
        sums, lr, seconds = sequential_stage_epoch(ps, ctx, train_batches, stage, stage_epoch)
        train_time += seconds
        with EpochTimer(device) as eval_timer:
            test_loss, test_acc = evaluate(model, test_batches, device)
        final = sequential_epoch_metrics(sums, stage, n, n_units, unit_sim, unit_pred)
        ctx.log_epoch(
            {
                "epoch": epoch + 1,
                "stage": float(stage),
                "stage_epoch": float(stage_epoch + 1),
                "lr": lr,
                **final,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "epoch_time_s": seconds,
                "eval_time_s": eval_timer.seconds,
            }
        )
        bad = [k for k, v in final.items() if not math.isfinite(v)]
        if bad:
            raise Diverged(epoch + 1, f"stage {stage}: " + ", ".join(f"{k} {final[k]}" for k in bad))
        ctx.epoch_done(
            epoch + 1,
            state,
            {
                "train_time": train_time,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "final": final,
                "stage": stage,
                "stage_epoch": stage_epoch + 1,
                "unit_sim": list(unit_sim),
                "unit_pred": list(unit_pred),
            },
        )
    return final_metrics(ps, test_acc, test_loss, train_time, final)


def training_step(model: nn.Module, num_classes: int, cfg: dict):
    """(the object whose copies train, step(x, y)): one PredSim step over all units, as `bench perf` times it."""
    ps = PredSim(model, num_classes, cfg)
    return ps, ps.train_step
