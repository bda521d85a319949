"""Karimi, Kalhor & Sadeghi Tabrizi: forward layer-wise learning by Separation Index maximisation
(docs/methods/si-forward.md).

Separation Index (Eq. 1, docs/methods/si-forward.md#31-separation-index; Kalhor's `data_complexity_measures`
SeprationIndex): the fraction of
points whose nearest other point (Euclidean, flattened features, self excluded, ties to the first index) has the
same label. A monitoring metric: O(m^2), so it is computed on a fixed subset (the first `si_eval_samples` training
samples, without augmentation).

Training loss of layer L (Eq. 7-8, docs/methods/si-forward.md#32-training-loss): in a mini-batch with features z_i =
flatten(F^L(x_i)), for each
anchor i the nearest same-label point i_p (q != i) and the nearest other-label point i_n are chosen by Euclidean
distance on detached features (the choice is not differentiated), and
    J^L = sum_i ( ||z_i - z_ip||^2 - ||z_i - z_in||^2 )      (no margin, no hinge)
with gradients through all three vectors; `hinge` clamps each anchor's term at 0 (max(., 0): the triplet loss at
margin 0, which the paper's prose describes, "penalizes the model when the distance between the anchor and the
positive sample is not smaller than" the negative's), so only the anchors that Eq. 1's SI counts wrong are pushed.
Anchors without a same-label partner, or without any other-label point,
in the batch are skipped (docs/methods/si-forward.md#35-ambiguities item 3). `loss_reduction` "sum" is Eq. 7 as written
(the default);
"mean" divides by the number of anchors used (docs/methods/si-forward.md#35-ambiguities item 1). Both forms are logged
whatever is minimised.
Karimi's public `triplet_local_si` helper picks wrong triplets (docs/methods/si-forward.md#35-ambiguities item 6); this
is Eq. 8 directly.

Algorithm (docs/methods/si-forward.md#33-algorithm): for each block L in order, blocks < L frozen (eval mode, features
under no_grad, cached
when exact: bench.methods.layerwise), block L's parameters trained on J^L for `epochs_per_layer` epochs with a
fresh optimizer of the config's kind (lr, momentum, weight decay; by default no LR schedule: the paper states none
per layer, but see `layer_lr_schedule`); then `model.head` is trained with cross-entropy for `classifier_epochs`
epochs with every block frozen (every block SI-trained, unless `feature_blocks` says otherwise).
A "layer" is one block of the BlockNet (VGG: conv, BN, ReLU and the max-pool that ends a stage; VD-CNN: block 0
is the embedding with the temporal conv, docs/methods/si-forward.md#35-ambiguities item 4). For SimCNN-k the head is the
k-specific aux
classifier (docs/methods/belilovsky.md#24-ambiguities), so the same code trains Karimi's "Proposed method" rows of Table
4.

Where Eq. 8's partners come from (`neighbours`): "data" (Algorithm 1, Step 3) searches them over the whole training
set on the new layer's output (eval mode, no grad: `data_pairs`) when the stage's first batch arrives and keeps them
for the stage; "data_epoch" does the same search at the start of every epoch of the stage, on the layer's current
output (the paper's "the positive and negative points are the nearest neighbors of the anchor" read as the current
neighbours; a resumed epoch searches again, on the checkpointed model); "batch" takes them within each mini-batch.
The searches' time is summed as pair_search_time_s, their passes over the training set as pair_search_passes.

The search's memory (`data_pairs`, `pair_budget`): it holds at most half of what is free on the device it runs on,
capped at `pair_search_max_mb`, and (on a GPU) half of the host's available memory in pinned buffers. Where the
layer outputs of the whole training set fit there, they are computed once and held; where they do not (Karimi's
DBpedia: 560,000 x 65,536 floats), the rows are searched in panels and the outputs are computed again through the
frozen prefix and the layer, in order, once per panel: more passes, the same partners (the same distances in the
same order, ties to the first index), given a forward pass that computes the same outputs every time.

`pair_search_precision` "tf32_rerank" (default "fp32"): a held search takes the distances from a TF32 product
first (tensor cores; TF32 allowed for that product only), keeps for each point every column within a provable
bound of its approximate best (`rerank_bound`), and computes in fp32 only the tiles that may decide a partner, with
the fp32 search's own arithmetic: the same partners, near-ties included (`_rerank_block`). Why not a cheaper
re-rank of the candidates alone: an fp32 product's last bits depend on the shape of the product it is computed in,
so only the same row block and column tile give the fp32 search's distances. So it saves fp32 work only where few
rows of a row block have more than one candidate (pair_search_rerank_fp32_share); a streamed search is fp32.

`layer_lr_schedule`: "none" (every stage at the constant initial LR) or "scaled": every SI stage and the classifier
stage get the config's end-to-end step schedule (lr_milestones, in epochs of cfg epochs, and lr_gamma) mapped onto
the stage's own epochs, milestone m -> round(m * stage_epochs / epochs), kept where 0 < that < stage_epochs
(`scaled_milestones`; e.g. epochs 200, milestones [100, 150], a 10-epoch stage: decays at stage epochs 5 and 8).
Why: Karimi's text says "The other hyperparameters were the same in both methods", and the suite's end-to-end runs
decay the LR x0.1 at 50 % and 75 % of their epochs; this reading gives the SI layers (and the classifier) the same
schedule.

`normalize_features` (off by default here: the defaults are Eq. 7 as printed) L2-normalises each z_i before the
loss (and the neighbour choice). J on raw features is unbounded below (docs/methods/si-forward.md#35-ambiguities item 2:
scaling features up
drives it to -inf whenever d_n > d_p); with unit-norm features it is bounded by [-4m, 4m]. Karimi's grid runs the
triplet-loss reading (hinge at margin 0, mean over anchors, normalised features) as the primary one and Eq. 7 as
printed as a companion (bench/grids/karimi.yaml says why). A non-finite epoch loss or feature norm raises
Diverged (bench.methods.layerwise.DIVERGENCE_KEYS).

method_options (defaults): epochs_per_layer (10, paper Table 1), classifier_epochs (None = epochs_per_layer,
docs/methods/si-forward.md#35-ambiguities item 5), loss_reduction ("sum"), normalize_features (false), hinge (false),
si_eval_samples (1000; 0 =
no SI monitoring), neighbours ("data"; "data_epoch", "batch"), train_scope ("block"; "growing": blocks 0..L all trained
on J^L), pair_search_max_mb (8192), pair_search_precision ("fp32"; "tf32_rerank"), layer_lr_schedule ("none";
"scaled"), feature_blocks (None = every block: how many leading blocks are trained by SI; the blocks after them
are trained with the head in the classifier stage, e.g. 2 for LeNet, whose fc1/fc2 are blocks, to make its whole
FC stack the classifier as docs/methods/si-forward.md#35-ambiguities item 4 says),
cache_prefix (true), prefix_cache_max_mb (8192). fb_si shares neighbours, train_scope, pair_search_max_mb and
pair_search_precision, not layer_lr_schedule.

Per-epoch records (feature stages): epoch (global), stage, layer, stage_epoch, lr, train_loss (the minimised loss,
mean over the epoch's batches), train_loss_sum (mean batch value of J in the sum form), train_loss_mean (J per
used anchor), anchors_used (fraction of samples that were anchors), feature_norm (mean L2 norm of the layer's
flattened training features), si (this layer, eval subset), si_layer<i> for every layer trained so far,
epoch_time_s, prefix_time_s, prefix_cache, eval_time_s; at the last epoch of a stage also test_loss/test_accuracy
of the full model (whose later blocks and head are still untrained). Classifier stage: train_loss,
train_accuracy, test_loss, test_accuracy (the full model) every epoch. Final metrics: test_accuracy, test_error,
test_loss, train_time_s (training epochs incl. the prefix, without evaluation), si_layer<i> and si_final (the
last layer's SI), si_input (the inputs' SI, images only), pair_search_time_s and pair_search_passes (data
neighbours), pair_search_rerank_candidates (tf32_rerank: the candidates over all points and both partners; a tight
bound gives about two per point and search) and pair_search_rerank_fp32_share (the share of row block x
column tile steps computed in fp32), prefix_time_s, prefix_cache_saved_s, prefix_cache,
prefix_cached_stages, total_epochs.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods import Cost
from bench.methods import layerwise as lw
from bench.methods.training import Context

REDUCTIONS = ("sum", "mean")
NEIGHBOURS = ("data", "data_epoch", "batch")  # data_epoch: the data's partners searched again every epoch
TRAIN_SCOPES = ("block", "growing")
LAYER_LR_SCHEDULES = ("none", "scaled")
PAIR_SEARCH_PRECISIONS = ("fp32", "tf32_rerank")  # tf32_rerank: TF32 candidates, fp32 partners (data_pairs)
SI_DEFAULTS = {
    "epochs_per_layer": 10,
    "loss_reduction": "sum",
    "normalize_features": False,
    "hinge": False,
    "si_eval_samples": 1000,
    "neighbours": "data",
    "train_scope": "block",
    "pair_search_max_mb": 8192,
    "pair_search_precision": "fp32",
}
DEFAULTS = {**SI_DEFAULTS, "classifier_epochs": None, "feature_blocks": None, "layer_lr_schedule": "none"}
COST = Cost("layerwise", si=True)


def stage_epochs(cfg: dict, n_blocks: int, n_layers: int | None = None, n_units: int | None = None) -> list[int]:
    """A stage per feature block, then the classifier's."""
    return lw.classified_stage_epochs(cfg, DEFAULTS, n_blocks)


# ---------------------------------------------------------------- Separation Index and the loss


def pairwise_sq_distances(z: torch.Tensor) -> torch.Tensor:
    """m x m squared Euclidean distances of the rows of z (flattened), via the Gram matrix of the centred rows
    (centring changes no distance and keeps the cancellation small)."""
    z = z.flatten(1)
    z = z - z.mean(dim=0, keepdim=True)
    sq = (z * z).sum(dim=1)
    return (sq[:, None] + sq[None, :] - 2.0 * (z @ z.t())).clamp_min_(0.0)


@torch.no_grad()
def nearest_other(features: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest other point (Euclidean; ties to the first index)."""
    z = features.flatten(1)
    if z.dtype != torch.float64 and z.numel() * 8 <= 2**29:  # double precision where it is cheap
        z = z.double()
    else:
        z = z.float()
    d = pairwise_sq_distances(z)
    d.fill_diagonal_(float("inf"))
    return d.argmin(dim=1)


def separation_index(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Eq. 1: (1/m) sum_i 1[l_i == l_{i*}], i* = argmin_{q != i} ||z_i - z_q||."""
    if len(labels) < 2:
        raise ValueError("the separation index needs at least two points")
    labels = labels.to(features.device)
    return (labels[nearest_other(features)] == labels).double().mean().item()


def si_triplet_terms(
    features: torch.Tensor, labels: torch.Tensor, hinge: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(terms, used): terms_i = ||z_i - z_ip||^2 - ||z_i - z_in||^2 (hinged at 0 with `hinge`) for the anchors
    `used` (0 elsewhere), with i_p the nearest same-label point (q != i) and i_n the nearest other-label point,
    chosen on detached features."""
    z = features.flatten(1)
    m = len(z)
    with torch.no_grad():  # the choice of i_p and i_n is not differentiated
        d = pairwise_sq_distances(z.detach().float())
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(m, dtype=torch.bool, device=z.device)
        d_pos = d.masked_fill(~same | eye, float("inf"))
        d_neg = d.masked_fill(same, float("inf"))
        best_pos, pos = d_pos.min(dim=1)
        best_neg, neg = d_neg.min(dim=1)
        used = torch.isfinite(best_pos) & torch.isfinite(best_neg)
    return triplet_terms(z, z[pos], z[neg], hinge).masked_fill(~used, 0.0), used


def triplet_terms(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, hinge: bool = False
) -> torch.Tensor:
    """||a - p||^2 - ||a - n||^2 per row (Eq. 7's summand); with `hinge`, max(that, 0): the triplet loss's hinge at
    margin 0, which penalises an anchor only while its nearest same-label point is not the nearer one."""
    terms = ((anchor - positive) ** 2).sum(dim=1) - ((anchor - negative) ** 2).sum(dim=1)
    return terms.clamp_min(0.0) if hinge else terms


def si_triplet_loss(
    features: torch.Tensor, labels: torch.Tensor, reduction: str = "sum", hinge: bool = False
) -> torch.Tensor:
    """J (Eq. 7-8): the sum over anchors ("sum", the paper) or its mean over the anchors used ("mean")."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown loss_reduction '{reduction}' ({', '.join(REDUCTIONS)})")
    terms, used = si_triplet_terms(features, labels, hinge)
    total = terms.sum()
    return total if reduction == "sum" else total / used.sum().clamp(min=1)


def free_bytes(device: torch.device) -> tuple[float, float]:
    """(device, host): the bytes free for the search now. A CUDA device: free memory plus what this process's
    allocator holds unused; the host: MemAvailable of /proc/meminfo (inf where it cannot be read). On a CPU run the
    device is the host."""
    host = float("inf")
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    host = float(line.split()[1]) * 1024
    except OSError:
        pass
    if device.type != "cuda":
        return host, host
    free, _ = torch.cuda.mem_get_info(device)
    return float(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)), host


def pair_budget(device: torch.device, max_mb: float, share: float = 0.5) -> tuple[float, float]:
    """(device bytes, host bytes) the pair search may hold: `share` of what is free on each (other jobs and the
    run's own later allocations keep the rest), the device's capped at `max_mb` (option pair_search_max_mb). On a
    CPU run there is one memory: the host tier is 0."""
    free_device, free_host = free_bytes(device)
    device_bytes = min(max_mb * 2**20, share * free_device)
    return device_bytes, (0.0 if device.type != "cuda" else share * free_host)


U32 = 2.0**-24  # fp32's unit roundoff
SIDES = ("pos", "neg")  # the partners, in the order of _masks


class Rerank(NamedTuple):
    """The approximate product of pair_search_precision "tf32_rerank": matmul(a, c) ~ a @ c.T with every operand
    element rounded to a relative error of at most `unit` (the products of rounded elements exact in fp32, as
    TF32's and bfloat16's are, and summed in fp32), and the safety factor of its error bound (`rerank_bound`)."""

    matmul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    unit: float
    safety: float = 2.0


def tf32_matmul(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a @ c.T with TF32 allowed for this product only (tensor cores on CUDA; the fp32 product elsewhere), the
    setting restored after, so that the run's other products stay fp32. The framework's current switch where it
    has one (fp32_precision: mixing it with the older allow_tf32 is an error), else allow_tf32."""
    switch = torch.backends.cuda.matmul
    new_api = getattr(switch, "fp32_precision", None) is not None
    key, on = ("fp32_precision", "tf32") if new_api else ("allow_tf32", True)
    saved = getattr(switch, key)
    setattr(switch, key, on)
    try:
        return a @ c.t()
    finally:
        setattr(switch, key, saved)


# TF32 keeps 10 of fp32's 23 mantissa bits: a relative error of 2^-11 rounded to nearest, 2^-10 where the tensor
# cores drop the low 13 bits (truncation); 2^-10 holds for both
TF32_RERANK = Rerank(tf32_matmul, 2.0**-10)


class FirstPass(NamedTuple):
    """What the pair search's first pass over the points found: their labels, their features where they fit the
    budgets (`holding`; device first, then host), and the sizes the search goes on with."""

    labels: torch.Tensor
    holding: bool
    held: list[torch.Tensor]
    held_dev: float  # bytes held on the device
    held_host: float  # bytes held on the host
    points: int
    dims: int
    chunk: int  # the most points one read gives
    step: float  # the bytes of one step (a row block, a column tile, their distances)
    block_rows: int
    block_cols: int


def _point_source(features):
    """A callable giving the (features, labels) reads: `features` itself when callable, else one that gives the
    same iterator every call (a plain iterable is read once)."""
    if callable(features):
        return features
    once = iter(features)

    def source():
        return once

    return source


def _first_pass(
    source, device: torch.device, device_budget: float, host_budget: float, block_rows: int, block_cols: int
) -> FirstPass:
    """Pass 1: the labels; the features kept while they fit (device first, then host; pinned on the host when the
    device is a GPU), else let go."""
    pin = device.type == "cuda"
    held, ys = [], []
    held_dev = held_host = 0.0
    holding, m, dims, chunk, step = True, 0, 0, 0, 0.0
    for f, y in source():
        z = f.flatten(1).float()
        if not dims:
            dims = z.shape[1]
            block_rows, block_cols = _tiles(device_budget, dims, block_rows, block_cols)
            step = _step_bytes(block_rows, block_cols, dims)
        m, chunk = m + len(z), max(chunk, len(z))
        ys.append(y.to(device))
        if not holding:
            continue
        size = z.numel() * 4
        if held_dev + size + step <= device_budget:
            held.append(z.to(device))
            held_dev += size
        elif held_host + size <= host_budget:
            kept = torch.empty(z.shape, dtype=z.dtype, pin_memory=True) if pin else torch.empty_like(z, device="cpu")
            held.append(kept.copy_(z))
            held_host += size
        else:
            holding, held = False, []
    labels = torch.cat(ys) if ys else torch.empty(0, dtype=torch.long, device=device)
    return FirstPass(labels, holding, held, held_dev, held_host, m, dims, chunk, step, block_rows, block_cols)


def _no_partners(labels: torch.Tensor, m: int, device: torch.device) -> dict:
    """The search's running state: the labels, and for each of the m points no partner yet (-1, distance inf)."""
    return {
        "labels": labels,
        "pos": torch.full((m,), -1, dtype=torch.long, device=device),
        "neg": torch.full((m,), -1, dtype=torch.long, device=device),
        "best_pos": torch.full((m,), float("inf"), device=device),
        "best_neg": torch.full((m,), float("inf"), device=device),
    }


def _search_held(out: dict, first: FirstPass, device: torch.device, rerank: Rerank | None = None) -> dict:
    """Every row block against every column tile of the held features (with `rerank`: `_rerank_block`); the stats
    of a held search."""
    pin = device.type == "cuda"
    held, m, block_rows, block_cols = first.held, first.points, first.block_rows, first.block_cols

    def rows(r0, r1):  # the held points r0..r1, a fresh tensor on the device
        return torch.cat([t.to(device, non_blocking=pin) for t in _cut(held, r0, r1)])

    def load(c0):  # the column tile starting at c0
        return rows(c0, min(m, c0 + block_cols))

    tiles = range(0, m, block_cols)
    for r0 in range(0, m, block_rows):
        a = rows(r0, min(m, r0 + block_rows))
        if rerank is not None:
            _rerank_block(out, a, r0, tiles, load, rerank)
            continue
        for c0 in tiles:
            _update(out, a, r0, load(c0), c0)
    return {
        "mode": "held",
        "panels": 1,
        "held_device_mb": first.held_dev / 2**20,
        "held_host_mb": first.held_host / 2**20,
        "peak_device_mb": (first.held_dev + (first.step if m else 0)) / 2**20,
    }


def _search_streamed(
    out: dict, source, first: FirstPass, device_budget: float, max_mb: float, device: torch.device
) -> dict:
    """The rows in panels of whole row blocks, as many as the device budget holds; for each panel the points read
    again, in order, in the same column tiles (the next panel's rows taken on the way). The stats of a streamed
    search, block_rows and passes included."""
    m, dims, chunk, step, block_cols = first.points, first.dims, first.chunk, first.step, first.block_cols
    block_rows, panel_rows = _panels(device_budget, step, chunk, dims, first.block_rows)
    if panel_rows < 1:
        raise ValueError(
            f"the pair search's device budget ({max_mb:.3g} MiB) cannot hold a row panel of "
            f"{block_rows} points beside a column tile of {block_cols} points, {dims} dimensions each"
        )
    passes = 1
    panels = math.ceil(m / panel_rows)
    panel = torch.cat(list(_read(source(), 0, min(m, panel_rows), device)))
    passes += 1
    for p in range(panels):
        r0 = p * panel_rows
        n0, n1 = r0 + panel_rows, min(m, r0 + 2 * panel_rows)
        following = []  # the next panel's rows, taken from this panel's pass
        for c0, c in _column_tiles(source(), block_cols, device):
            for b0 in range(0, len(panel), block_rows):
                _update(out, panel[b0 : b0 + block_rows].clone(), r0 + b0, c, c0)
            if c0 < n1 and c0 + len(c) > n0:
                following.append(c[max(0, n0 - c0) : n1 - c0].clone())
        passes += 1
        panel = torch.cat(following) if following else None
    return {
        "passes": passes,
        "block_rows": block_rows,
        "mode": "streamed",
        "panels": panels,
        "held_device_mb": 0.0,
        "held_host_mb": 0.0,
        "peak_device_mb": (2 * panel_rows * dims * 4 + step + chunk * dims * 4) / 2**20,
    }


@torch.no_grad()
def data_pairs(
    features,
    device: torch.device,
    max_mb: float = 8192.0,
    host_mb: float | None = None,
    block_rows: int = 1024,
    block_cols: int = 4096,
    stats: dict | None = None,
    rerank: Rerank | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8 over a whole set (Algorithm 1, Step 3): (pos, neg), for every point the index of its nearest other
    point with the same label and of its nearest point with another label (squared Euclidean distance, ties to the
    first index; -1 where there is none).

    `features` gives (features, labels) of the points in order: a callable that returns a fresh iterable each call
    (the search may then compute them again, e.g. through the frozen prefix) or an iterable, read once. The
    distances are computed a row block x a column tile at a time (`block_rows` x `block_cols` points, blocks and
    tiles starting at multiples of those sizes), and the search holds at most `max_mb` MiB on `device` (the features
    it keeps there, and one step: a row block, a column tile, their distances) and `host_mb` MiB of features on the
    host (None: sized from what is free, `pair_budget`; pinned when the device is a GPU). Two ways:
      * held: the features of all points fit on the device, or on the device and the host: kept from the first
        pass;
      * streamed (they do not, and `features` is a callable): the rows are taken in panels of whole row blocks, as
        many as the device budget holds, and for each panel the points are read again, in order, and cut into the
        same column tiles (the search costs 2 + panels passes over the points, none held).
    Both compute every distance from the same row block and column tile, so they find the same partners, exact ties
    and near-ties alike, given points that are the same on every read (a deterministic forward pass). Only where the
    budget cannot hold one step of the given sizes are the blocks made smaller (`_tiles`).
    With `rerank` (pair_search_precision "tf32_rerank") a held search takes its distances from the approximate
    product first and computes in fp32 only what may decide a partner (`_rerank_block`): the same partners; a
    streamed one, which sees each column tile once per panel, searches in fp32 as without it.
    `stats` (a dict) gets mode, points, dims, passes, panels, block_rows, block_cols, held_device_mb, held_host_mb,
    peak_device_mb (the most the search held on the device at once, by its own count), tiles (row block x column
    tile steps), fp32_tiles (those computed in fp32) and, re-ranked, rerank_candidates (the candidates of all rows,
    both partners)."""
    device_budget = max_mb * 2**20
    host_budget = pair_budget(device, max_mb)[1] if host_mb is None else host_mb * 2**20
    source = _point_source(features)
    first = _first_pass(source, device, device_budget, host_budget, block_rows, block_cols)
    m, dims = first.points, first.dims
    info = {"points": m, "dims": dims, "passes": 1, "block_rows": first.block_rows, "block_cols": first.block_cols}
    out = _no_partners(first.labels, m, device)
    if first.holding and rerank is not None:
        out.update(rerank_candidates=0, fp32_tiles=0, tiles=0)
        info.update(_search_held(out, first, device, rerank))
        info.update({key: out[key] for key in ("rerank_candidates", "fp32_tiles", "tiles")})
    elif first.holding:
        info.update(_search_held(out, first, device))
    elif not callable(features):
        raise ValueError(
            f"the pair search needs {m * dims * 4 / 2**20:.0f} MiB to hold the features of its "
            f"{m} points, more than its budget ({max_mb:.0f} MiB on the device, "
            f"{host_budget / 2**20:.0f} MiB on the host), and its points can be read only once"
        )
    else:
        info.update(_search_streamed(out, source, first, device_budget, max_mb, device))
    info.setdefault("tiles", math.ceil(m / info["block_rows"]) * math.ceil(m / info["block_cols"]))
    info.setdefault("fp32_tiles", info["tiles"])
    if stats is not None:
        stats.update(info)
    return out["pos"], out["neg"]


def search_plan(
    points: int,
    dims: int,
    chunk: int,
    device_bytes: float,
    host_bytes: float,
    block_rows: int = 1024,
    block_cols: int = 4096,
) -> dict:
    """What `data_pairs` will do over `points` points of `dims` dimensions read in chunks of `chunk`, with these
    budgets (bytes), without running it: mode ("held" or "streamed"; "too large" where not even one panel fits),
    passes over the points, panels, and the peak bytes it holds on the device and on the host (to a chunk)."""
    block_rows, block_cols = _tiles(device_bytes, dims, block_rows, block_cols)
    step, size = _step_bytes(block_rows, block_cols, dims), points * dims * 4.0
    on_device = max(0.0, min(size, device_bytes - step))
    if size <= on_device + host_bytes:
        return {
            "mode": "held",
            "passes": 1,
            "panels": 1,
            "device_bytes": on_device + step,
            "host_bytes": size - on_device,
        }
    block_rows, panel_rows = _panels(device_bytes, step, chunk, dims, block_rows)
    if panel_rows < 1:
        return {"mode": "too large", "passes": 0, "panels": 0, "device_bytes": device_bytes, "host_bytes": 0.0}
    panels = math.ceil(points / panel_rows)
    return {
        "mode": "streamed",
        "passes": 2 + panels,
        "panels": panels,
        "device_bytes": 2 * panel_rows * dims * 4 + step + chunk * dims * 4,
        "host_bytes": 0.0,
    }


def _panels(device_bytes: float, step: float, chunk: int, dims: int, block_rows: int) -> tuple[int, int]:
    """(row block, panel rows) of a streamed search: two panels (this one, and the next one gathered during its
    pass) beside one step and one read chunk, in whole row blocks (smaller blocks where not one fits)."""
    capacity = int((device_bytes - step - chunk * dims * 4) // (2 * dims * 4))
    if 0 < capacity < block_rows:  # not one row block: smaller ones (other tiles than a larger budget's)
        block_rows = capacity
    return block_rows, capacity // block_rows * block_rows


def _cut(parts: list[torch.Tensor], r0: int, r1: int) -> list[torch.Tensor]:
    """The rows r0..r1 of the concatenation of `parts`, as slices of them."""
    pieces, start = [], 0
    for t in parts:
        if start < r1 and start + len(t) > r0:
            pieces.append(t[max(0, r0 - start) : r1 - start])
        start += len(t)
    return pieces


def _read(chunks, r0: int, r1: int, device: torch.device):
    """The points r0..r1 of one read of the points, on the device, piece by piece (the read stops there)."""
    start = 0
    for f, _ in chunks:
        z = f.flatten(1).float()
        if start + len(z) > r0:
            yield z[max(0, r0 - start) : r1 - start].to(device)
        start += len(z)
        if start >= r1:
            return


def _column_tiles(chunks, cols: int, device: torch.device):
    """(c0, tile) over one read of the points: the chunks cut and joined into tiles of `cols` points starting at
    multiples of `cols` (the last one shorter), fresh tensors on the device."""
    pending, count, c0 = [], 0, 0
    for f, _ in chunks:
        pending.append(f.flatten(1).float().to(device))
        count += len(pending[-1])
        while count >= cols:
            joined = torch.cat(pending)
            yield c0, joined[:cols].clone()
            rest = joined[cols:]
            pending, count, c0 = ([rest] if len(rest) else []), len(rest), c0 + cols
    if count:
        yield c0, torch.cat(pending)


def _step_bytes(rows: int, cols: int, dims: int) -> float:
    """Device bytes of one step: a row block and a column tile of features, their distances and temporaries (a
    masked copy, two masks) and the index arithmetic."""
    return (rows + cols) * dims * 4 + rows * cols * (4 + 4 + 1 + 1) + (rows + cols) * (4 + 8)


def _tiles(budget: float, dims: int, rows: int, cols: int) -> tuple[int, int]:
    """The row block and column tile: (rows, cols), halved (the larger first) only while one step does not fit in
    half of `budget` bytes."""
    while _step_bytes(rows, cols, dims) > budget / 2 and (rows > 1 or cols > 1):
        if cols >= rows:
            cols = max(1, cols // 2)
        else:
            rows = max(1, rows // 2)
    return rows, cols


def _masks(labels: torch.Tensor, r0: int, rows: int, c0: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos, neg) of rows r0.. against columns c0..: the pairs that cannot give a positive partner (another label,
    or the point itself) and those that cannot give a negative one (the same label)."""
    same = labels[r0 : r0 + rows, None] == labels[None, c0 : c0 + cols]
    r = torch.arange(r0, r0 + rows, device=labels.device)
    c = torch.arange(c0, c0 + cols, device=labels.device)
    return ~same | (r[:, None] == c[None, :]), same


def _update(out: dict, a: torch.Tensor, r0: int, c: torch.Tensor, c0: int):
    """Fold the distances between rows r0.. (a) and columns c0.. (c) into the running nearest partners: strictly
    nearer only, so that an earlier column keeps a tie."""
    r1 = r0 + len(a)
    d = ((a * a).sum(dim=1)[:, None] + (c * c).sum(dim=1)[None, :] - 2.0 * (a @ c.t())).clamp_min_(0.0)
    for best, index, mask in zip(
        (out["best_pos"], out["best_neg"]), (out["pos"], out["neg"]), _masks(out["labels"], r0, len(a), c0, len(c))
    ):
        value, arg = d.masked_fill(mask, float("inf")).min(dim=1)
        better = value < best[r0:r1]
        best[r0:r1] = torch.where(better, value, best[r0:r1])
        index[r0:r1] = torch.where(better, arg + c0, index[r0:r1])


# ---------------------------------------------------------------- the pair search on tensor cores, re-ranked in fp32


def rerank_bound(sq_a: torch.Tensor, sq_c: torch.Tensor, dims: int, rerank: Rerank) -> torch.Tensor:
    """E[i, j] >= |d~ - d|: how far the approximate distance d~ of row x = a_i and column y = c_j (`_approx`) can
    be from the distance d the fp32 search computes, from their squared norms (the search's own, bit for bit).

    Both are s - 2g, s = |x|^2 + |y|^2 the same fp32 sum; g = x.y summed in fp32 from exact products, of the
    operands for d and of the rounded ones for d~ (x~ = x (1 + e), |e| <= u = rerank.unit). With
    gamma = 2nU / (1 - 2nU), n = dims, U = 2^-24 (any fp32 sum of n terms, each addition off by at most 2U:
    round-to-nearest gives U, tensor cores may truncate):
        |x~.y~ - x.y| <= (2u + u^2) sum|x_k y_k|        (the rounded operands)
        |g~ - x~.y~|  <= gamma (1 + u)^2 sum|x_k y_k|   (the approximate product's sum)
        |g - x.y|     <= gamma sum|x_k y_k|             (the fp32 search's sum)
    and sum|x_k y_k| <= |x||y|; the subtraction s - 2g, rounded in each, adds at most U (|x| + |y|)^2 per side,
    and the clamp at 0 does not widen the gap. So
        E = safety * (2 (2u + u^2 + gamma ((1 + u)^2 + 1)) |x||y| + 2U (|x| + |y|)^2),
    the safety factor (2) covering the rounding of the norms |x| = sqrt(fl(|x|^2)) and of E itself (relative errors
    of order nU, far below a factor 2). Infinite, every column a candidate, where 2nU >= 1."""
    steps = 2 * dims * U32
    if steps >= 1:
        return torch.full((len(sq_a), len(sq_c)), math.inf, device=sq_a.device)
    u, gamma = rerank.unit, steps / (1 - steps)
    products = 2 * (2 * u + u * u + gamma * ((1 + u) ** 2 + 1))
    bound = (sq_a[:, None] + sq_c[None, :]).mul_(rerank.safety * 2 * U32)  # (|x| + |y|)^2 = |x|^2 + |y|^2 + 2|x||y|
    return bound.addr_(sq_a.sqrt(), sq_c.sqrt(), alpha=rerank.safety * (products + 4 * U32))


def _approx(a: torch.Tensor, c: torch.Tensor, sq_a: torch.Tensor, rerank: Rerank, sign: float) -> torch.Tensor:
    """The approximate distances of rows a to columns c (fp32 norms, `rerank.matmul` products) plus `sign` times
    their bound: the upper (+1) or lower (-1) ends of intervals that hold the fp32 search's distances."""
    sq_c = (c * c).sum(dim=1)
    d = (sq_a[:, None] + sq_c[None, :] - 2.0 * rerank.matmul(a, c)).clamp_min_(0.0)
    return d.add_(rerank_bound(sq_a, sq_c, a.shape[1], rerank), alpha=sign)


def _approx_best(labels: torch.Tensor, a: torch.Tensor, r0: int, tiles, load, rerank: Rerank) -> dict:
    """Pass 1 of a row block: per side, each row's least upper end over the columns it may pair with, a bound on
    the least distance the fp32 search finds for it."""
    sq_a = (a * a).sum(dim=1)  # as _update computes it: the same bits
    upper = {side: torch.full((len(a),), math.inf, device=a.device) for side in SIDES}
    for c0 in tiles:
        c = load(c0)
        d = _approx(a, c, sq_a, rerank, 1.0)
        for side, mask in zip(SIDES, _masks(labels, r0, len(a), c0, len(c))):
            torch.minimum(upper[side], d.masked_fill(mask, math.inf).amin(dim=1), out=upper[side])
    return upper


def _candidates(labels: torch.Tensor, a: torch.Tensor, r0: int, tiles, load, rerank: Rerank, upper: dict) -> dict:
    """Pass 2: per side, each row's candidates, the columns whose lower end is at most the row's least upper end
    (its fp32 nearest is one of them): (their count, the first, whether each tile holds one of the row's)."""
    sq_a = (a * a).sum(dim=1)
    none = torch.full((len(a),), -1, dtype=torch.long, device=a.device)
    found = {side: (torch.zeros_like(none), none.clone()) for side in SIDES}
    held = {side: [] for side in SIDES}
    for c0 in tiles:
        c = load(c0)
        d = _approx(a, c, sq_a, rerank, -1.0)
        for side, mask in zip(SIDES, _masks(labels, r0, len(a), c0, len(c))):
            hit = d.masked_fill(mask, math.nan) <= upper[side][:, None]  # NaN: never a candidate
            count, first = found[side]
            new = (first < 0) & hit.any(dim=1)
            first.copy_(torch.where(new, hit.int().argmax(dim=1) + c0, first))  # argmax: the first candidate
            count += hit.sum(dim=1)
            held[side].append(hit.any(dim=1))
    return {side: (*found[side], torch.stack(held[side], dim=1)) for side in SIDES}


def _rerank_block(out: dict, a: torch.Tensor, r0: int, tiles, load, rerank: Rerank):
    """Rows r0.. (a) against the column tiles (their starts `tiles`, load(c0) the tile) with the approximate
    product, their partners the fp32 search's, exactly: a row with one candidate takes it (the fp32 nearest is
    among the candidates); the tiles holding a candidate of a row with more are folded by `_update`, the fp32
    search's own arithmetic (the same row block and column tile, so the same bits), in order, which keeps the
    search's tie-break (the first index among equal distances). The other tiles are never computed in fp32: a
    saving only where few rows of a block have more than one candidate (stats fp32_tiles / tiles say)."""
    upper = _approx_best(out["labels"], a, r0, tiles, load, rerank)
    found = _candidates(out["labels"], a, r0, tiles, load, rerank, upper)
    needed = torch.zeros(len(tiles), dtype=torch.bool, device=a.device)
    for count, _, held in found.values():
        needed |= (held & (count > 1)[:, None]).any(dim=0)
        out["rerank_candidates"] += int(count.sum())
    for c0, fold in zip(tiles, needed.tolist()):
        if fold:
            _update(out, a, r0, load(c0), c0)
    for side, (count, first, _) in found.items():
        index = out[side][r0 : r0 + len(a)]
        index.copy_(torch.where(count == 1, first, index))
    out["fp32_tiles"] += int(needed.sum())
    out["tiles"] += len(tiles)


# ---------------------------------------------------------------- stages


def check_si_options(opts: dict, method: str) -> dict:
    if opts["loss_reduction"] not in REDUCTIONS:
        raise ValueError(f"{method}: unknown loss_reduction '{opts['loss_reduction']}' ({', '.join(REDUCTIONS)})")
    opts["epochs_per_layer"] = lw.positive_int(opts, "epochs_per_layer", method)
    opts["si_eval_samples"] = lw.positive_int(opts, "si_eval_samples", method, minimum=0)
    opts["normalize_features"] = bool(opts["normalize_features"])
    opts["hinge"] = bool(opts["hinge"])
    for key, allowed in (
        ("neighbours", NEIGHBOURS),
        ("train_scope", TRAIN_SCOPES),
        ("layer_lr_schedule", LAYER_LR_SCHEDULES),
        ("pair_search_precision", PAIR_SEARCH_PRECISIONS),
    ):
        if key in opts and opts[key] not in allowed:  # layer_lr_schedule: si_forward's only
            raise ValueError(f"{method}: unknown {key} '{opts[key]}' ({', '.join(allowed)})")
    opts["pair_search_max_mb"] = float(opts["pair_search_max_mb"])
    return opts


def scaled_milestones(cfg: dict, stage_epochs: int) -> tuple[int, ...]:
    """The config's end-to-end LR milestones (epochs of cfg epochs) mapped onto a stage of `stage_epochs` epochs:
    m -> round(m * stage_epochs / epochs), kept where 0 < that < stage_epochs, in order, without repeats."""
    epochs = lw.positive_int(cfg, "epochs", "layer_lr_schedule scaled")
    mapped = (round(m * stage_epochs / epochs) for m in cfg.get("lr_milestones") or [])
    return tuple(sorted({m for m in mapped if 0 < m < stage_epochs}))


def stage_schedule(run: lw.Run, opts: dict, stage_epochs: int) -> dict:
    """Stage keywords (milestones, gamma) of option layer_lr_schedule for a stage of `stage_epochs` epochs."""
    if opts.get("layer_lr_schedule", "none") != "scaled":
        return {}
    return {"milestones": scaled_milestones(run.cfg, stage_epochs), "gamma": float(run.cfg.get("lr_gamma", 0.1))}


@torch.no_grad()
def layer_si(run: lw.Run, feats: lw.StageFeatures, module: nn.Module, samples: int) -> float:
    """SI of module's output (eval mode) on the first `samples` training samples after the stage's prefix."""
    f, y = feats.subset(samples)
    module.eval()
    bs = run.eval_batch_size
    z = torch.cat([module(f[i : i + bs]).flatten(1) for i in range(0, len(f), bs)])
    return separation_index(z, y)


def input_si(run: lw.Run, samples: int) -> float | None:
    """SI of the (normalised) input images of the eval subset; None for text or when SI monitoring is off."""
    if run.text or samples < 2:
        return None
    x, y = run.data.x_train[:samples], run.data.y_train[:samples]
    return separation_index(torch.cat([xb for xb, _ in run.plain(x, y, run.eval_batch_size)]), y)


def embedding(module: nn.Module, normalize: bool):
    """embed(f) -> (the layer's flattened features for the loss, L2-normalised when `normalize`; as computed)."""

    def embed(f):
        z = module(f).flatten(1)
        return F.normalize(z, dim=1) if normalize else z, z

    return embed


def reduce_terms(terms: torch.Tensor, used: torch.Tensor, z: torch.Tensor, reduction: str):
    """J of the batch (Eq. 7: the sum of the anchors' terms, or their mean over the anchors used) and the sums the
    epoch's record is made of."""
    j_sum = terms.sum()
    anchors = used.sum()
    loss = j_sum if reduction == "sum" else j_sum / anchors.clamp(min=1)
    return loss, {
        "loss": loss.detach(),
        "j_sum": j_sum.detach(),
        "anchors": anchors,
        "norm": torch.linalg.vector_norm(z.detach(), dim=1).sum(),
    }


def batch_step(embed, opts: dict):
    """The step of neighbours "batch": Eq. 8's partners searched inside the mini-batch."""
    hinge, reduction = opts["hinge"], opts["loss_reduction"]

    def step_batch(f, y):
        z_used, z = embed(f)
        terms, used = si_triplet_terms(z_used, y, hinge)
        return reduce_terms(terms, used, z, reduction)

    return step_batch


def pair_rerank(opts: dict) -> Rerank | None:
    """The approximate product of option pair_search_precision: None for fp32, else TF32_RERANK, read when called
    (a test may put a CPU stand-in there)."""
    return TF32_RERANK if opts["pair_search_precision"] == "tf32_rerank" else None


def search_pairs(run: lw.Run, feats: lw.StageFeatures, module: nn.Module, embed, layer: int, opts: dict, pairs: dict):
    """Step 3 of Algorithm 1 for this layer: partners by Eq. 8 on the layer's output (eval mode, no grad) for
    the whole training set, into `pairs` (with the passes and seconds the searches took so far)."""
    with lw.EpochTimer(run.device) as timer:
        module.eval()
        with torch.no_grad():

            def points():  # the layer's outputs in sample order, computed again on every call
                return ((embed(f)[0], y) for f, y in feats.in_order())

            search_stats = {}
            pos, neg = data_pairs(
                points,
                run.device,
                pair_budget(run.device, opts["pair_search_max_mb"])[0] / 2**20,
                stats=search_stats,
                rerank=pair_rerank(opts),
            )
        module.train()
    if opts["pair_search_precision"] != "fp32":  # what the re-rank did, summed over the run's searches
        for key in ("rerank_candidates", "fp32_tiles", "tiles"):
            pairs[key] = pairs.get(key, 0) + search_stats.get(key, 0)
    pairs.update(
        layer=layer,
        epoch=run.epoch,
        pos=pos,
        neg=neg,
        passes=pairs.get("passes", 0) + search_stats["passes"],
        seconds=pairs.get("seconds", 0.0) + timer.seconds,
    )


def data_step(run: lw.Run, feats: lw.StageFeatures, module: nn.Module, embed, layer: int, opts: dict, pairs: dict):
    """The step of neighbours "data" / "data_epoch": each anchor's partners taken from the training set's search
    (searched when the stage's, or with "data_epoch" each epoch's, first batch arrives)."""
    hinge, reduction = opts["hinge"], opts["loss_reduction"]
    per_epoch = opts["neighbours"] == "data_epoch"

    def step_data(f, y, idx):
        # run.epoch counts the epoch under way, and a resumed run's is past the checkpointed pairs' epoch
        if pairs.get("layer") != layer or (per_epoch and pairs.get("epoch") != run.epoch):
            search_pairs(run, feats, module, embed, layer, opts, pairs)
        idx = idx.to(pairs["pos"].device, non_blocking=True)  # pinned under random_draws per_epoch: no host sync
        pos, neg = pairs["pos"][idx], pairs["neg"][idx]
        used = (pos >= 0) & (neg >= 0)
        b = len(f)
        z_used, z = embed(torch.cat([f, feats.gather(pos.clamp(min=0)), feats.gather(neg.clamp(min=0))]))
        za, zp, zn = z_used[:b], z_used[b : 2 * b], z_used[2 * b :]
        terms = triplet_terms(za, zp, zn, hinge)
        return reduce_terms(terms.masked_fill(~used, 0.0), used, z[:b], reduction)

    return step_data


def summarize_si(s: dict, n: int, batches: int) -> dict:
    """The epoch's record from the summed batch values (`reduce_terms`) of n samples in `batches` batches."""
    return {
        "train_loss": s["loss"] / batches,
        "train_loss_sum": s["j_sum"] / batches,
        "train_loss_mean": s["j_sum"] / max(s["anchors"], 1.0),
        "anchors_used": s["anchors"] / n,
        "feature_norm": s["norm"] / n,
    }


def si_evaluation(run: lw.Run, feats: lw.StageFeatures, module: nn.Module, layer: int, samples: int, si_values: dict):
    """evaluate(last): the layer's SI every epoch (into si_values[layer]; off below 2 samples) and, after the
    stage's last epoch, the model's test metrics."""

    def evaluate(last):
        record = {}
        if samples >= 2:
            si_values[layer] = layer_si(run, feats, module, samples)
            record["si"] = si_values[layer]
            record.update({f"si_layer{i}": v for i, v in sorted(si_values.items())})
        if last:
            record.update(lw.evaluate_model(run, feats))
        return record

    return evaluate


def si_stage(run: lw.Run, index: int, layer: int, opts: dict, si_values: dict, pairs: dict) -> lw.Stage:
    """Train block `layer` on J (train_scope "block": blocks < layer frozen; "growing": blocks 0..layer trained
    together); si_values[layer] gets the layer's SI every epoch; `pairs` holds the stage's Eq. 8 partners
    (neighbours "data": searched over the training set when the stage's first batch arrives, kept for the stage;
    "data_epoch": searched again when each epoch's first batch arrives, `pairs["epoch"]` the global epoch they were
    found in)."""
    model = run.model
    growing = opts["train_scope"] == "growing"
    feats = lw.StageFeatures(run, 0 if growing else layer)
    module = nn.Sequential(*model.blocks[: layer + 1]) if growing else model.blocks[layer]
    embed = embedding(module, opts["normalize_features"])
    data = opts["neighbours"] in ("data", "data_epoch")
    step = data_step(run, feats, module, embed, layer, opts, pairs) if data else batch_step(embed, opts)
    return lw.Stage(
        index=index,
        layer=layer,
        features=feats,
        modules=[module],
        step=step,
        indexed=data,
        takes=2 if data else 0,  # the positive and the negative partners (feats.gather)
        summarize=summarize_si,
        epochs=opts["epochs_per_layer"],
        evaluate=si_evaluation(run, feats, module, layer, opts["si_eval_samples"], si_values),
        **stage_schedule(run, opts, opts["epochs_per_layer"]),
    )


def si_metrics(si_values: dict, si_in: float | None, pairs: dict | None = None) -> dict:
    out = {f"si_layer{i}": v for i, v in sorted(si_values.items())}
    if pairs and "seconds" in pairs:
        out["pair_search_time_s"] = pairs["seconds"]
        out["pair_search_passes"] = float(pairs.get("passes", 0))
    if pairs and "rerank_candidates" in pairs:  # pair_search_precision tf32_rerank: is the bound tight enough?
        out["pair_search_rerank_candidates"] = float(pairs["rerank_candidates"])
        out["pair_search_rerank_fp32_share"] = pairs["fp32_tiles"] / max(pairs["tiles"], 1)
    if si_values:
        out["si_final"] = si_values[max(si_values)]
    if si_in is not None:
        out["si_input"] = si_in
    return out


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    opts = check_si_options(lw.options(cfg, "si_forward", DEFAULTS), "si_forward")
    classifier_epochs = opts["classifier_epochs"] if opts["classifier_epochs"] is not None else opts["epochs_per_layer"]
    opts["classifier_epochs"] = lw.positive_int(
        {"classifier_epochs": classifier_epochs}, "classifier_epochs", "si_forward"
    )
    n_layers = lw.feature_blocks(opts, model, "si_forward")
    run = lw.Run(model, data, cfg, ctx, opts)
    with lw.frozen_parameters(model):
        si_values = run.keep("si_values", {})
        pairs = run.keep("pairs", {})
        si_in = input_si(run, opts["si_eval_samples"])
        for layer in range(n_layers):
            if run.skip(layer):  # trained before a kill: the checkpointed model has it
                continue
            stage = si_stage(run, layer, layer, opts, si_values, pairs)
            lw.train_stage(run, stage)
            stage.features.close()
        last = lw.train_classifier(
            run, n_layers, opts["classifier_epochs"], **stage_schedule(run, opts, opts["classifier_epochs"])
        )
    return {**lw.final_metrics(run, last), **si_metrics(si_values, si_in, pairs)}
