"""Karimi, Kalhor & Sadeghi Tabrizi: forward layer-wise learning by Separation Index maximisation (methods.md 3).

Separation Index (Eq. 1, methods.md 3.1; Kalhor's `data_complexity_measures` SeprationIndex): the fraction of
points whose nearest other point (Euclidean, flattened features, self excluded, ties to the first index) has the
same label. A monitoring metric: O(m^2), so it is computed on a fixed subset (the first `si_eval_samples` training
samples, without augmentation).

Training loss of layer L (Eq. 7-8, methods.md 3.2): in a mini-batch with features z_i = flatten(F^L(x_i)), for each
anchor i the nearest same-label point i_p (q != i) and the nearest other-label point i_n are chosen by Euclidean
distance on detached features (the choice is not differentiated), and
    J^L = sum_i ( ||z_i - z_ip||^2 - ||z_i - z_in||^2 )      (no margin, no hinge)
with gradients through all three vectors; `hinge` clamps each anchor's term at 0 (max(., 0): the triplet loss at
margin 0, which the paper's prose describes, "penalizes the model when the distance between the anchor and the
positive sample is not smaller than" the negative's), so only the anchors that Eq. 1's SI counts wrong are pushed.
Anchors without a same-label partner, or without any other-label point,
in the batch are skipped (methods.md 3.5 item 3). `loss_reduction` "sum" is Eq. 7 as written (the default);
"mean" divides by the number of anchors used (methods.md 3.5 item 1). Both forms are logged whatever is minimised.
Karimi's public `triplet_local_si` helper picks wrong triplets (methods.md 3.5 item 6); this is Eq. 8 directly.

Algorithm (methods.md 3.3): for each block L in order, blocks < L frozen (eval mode, features under no_grad, cached
when exact: bench.methods.layerwise), block L's parameters trained on J^L for `epochs_per_layer` epochs with a
fresh optimizer of the config's kind (lr, momentum, weight decay; by default no LR schedule: the paper states none
per layer, but see `layer_lr_schedule`); then `model.head` is trained with cross-entropy for `classifier_epochs`
epochs with every block frozen (every block SI-trained, unless `feature_blocks` says otherwise).
A "layer" is one block of the BlockNet (VGG: conv, BN, ReLU and the max-pool that ends a stage; VD-CNN: block 0
is the embedding with the temporal conv, methods.md 3.5 item 4). For SimCNN-k the head is the k-specific aux
classifier (methods.md 2.4), so the same code trains Karimi's "Proposed method" rows of Table 4.

Where Eq. 8's partners come from (`neighbours`): "data" (Algorithm 1, Step 3) searches them over the whole training
set on the new layer's output (eval mode, no grad: `data_pairs`) when the stage's first batch arrives and keeps them
for the stage; "data_epoch" does the same search at the start of every epoch of the stage, on the layer's current
output (the paper's "the positive and negative points are the nearest neighbors of the anchor" read as the current
neighbours; a resumed epoch searches again, on the checkpointed model); "batch" takes them within each mini-batch.
The searches' time is summed as pair_search_time_s.

`layer_lr_schedule`: "none" (every stage at the constant initial LR) or "scaled": every SI stage and the classifier
stage get the config's end-to-end step schedule (lr_milestones, in epochs of cfg epochs, and lr_gamma) mapped onto
the stage's own epochs, milestone m -> round(m * stage_epochs / epochs), kept where 0 < that < stage_epochs
(`scaled_milestones`; e.g. epochs 200, milestones [100, 150], a 10-epoch stage: decays at stage epochs 5 and 8).
Why: Karimi's text says "The other hyperparameters were the same in both methods", and the suite's end-to-end runs
decay the LR x0.1 at 50 % and 75 % of their epochs; this reading gives the SI layers (and the classifier) the same
schedule.

`normalize_features` (off by default here: the defaults are Eq. 7 as printed) L2-normalises each z_i before the
loss (and the neighbour choice). J on raw features is unbounded below (methods.md 3.5 item 2: scaling features up
drives it to -inf whenever d_n > d_p); with unit-norm features it is bounded by [-4m, 4m]. Karimi's grid runs the
triplet-loss reading (hinge at margin 0, mean over anchors, normalised features) as the primary one and Eq. 7 as printed as a
companion (bench/grids/karimi.yaml says why). A non-finite epoch loss or feature norm raises
Diverged (bench.methods.layerwise.DIVERGENCE_KEYS).

method_options (defaults): epochs_per_layer (10, paper Table 1), classifier_epochs (None = epochs_per_layer,
methods.md 3.5 item 5), loss_reduction ("sum"), normalize_features (false), hinge (false), si_eval_samples (1000; 0 = no SI
monitoring), neighbours ("data"; "data_epoch", "batch"), train_scope ("block"; "growing": blocks 0..L all trained
on J^L), pair_search_max_mb (8192), layer_lr_schedule ("none"; "scaled"), feature_blocks (None = every block: how
many leading blocks are trained by SI; the blocks after them are trained with the head in the classifier stage, e.g.
2 for LeNet, whose fc1/fc2 are blocks, to make its whole FC stack the classifier as methods.md 3.5 item 4 says),
cache_prefix (true), prefix_cache_max_mb (8192). fb_si shares neighbours, train_scope and pair_search_max_mb, not
layer_lr_schedule.

Per-epoch records (feature stages): epoch (global), stage, layer, stage_epoch, lr, train_loss (the minimised loss,
mean over the epoch's batches), train_loss_sum (mean batch value of J in the sum form), train_loss_mean (J per
used anchor), anchors_used (fraction of samples that were anchors), feature_norm (mean L2 norm of the layer's
flattened training features), si (this layer, eval subset), si_layer<i> for every layer trained so far,
epoch_time_s, prefix_time_s, prefix_cache, eval_time_s; at the last epoch of a stage also test_loss/test_accuracy
of the full model (whose later blocks and head are still untrained). Classifier stage: train_loss,
train_accuracy, test_loss, test_accuracy (the full model) every epoch. Final metrics: test_accuracy, test_error,
test_loss, train_time_s (training epochs incl. the prefix, without evaluation), si_layer<i> and si_final (the
last layer's SI), si_input (the inputs' SI, images only), prefix_time_s, prefix_cache_saved_s, prefix_cache,
prefix_cached_stages, total_epochs.
"""
import torch
import torch.nn.functional as F
from torch import nn

from bench.methods import layerwise as lw
from bench.methods.training import Context

REDUCTIONS = ("sum", "mean")
NEIGHBOURS = ("data", "data_epoch", "batch")  # data_epoch: the data's partners searched again every epoch
TRAIN_SCOPES = ("block", "growing")
LAYER_LR_SCHEDULES = ("none", "scaled")
SI_DEFAULTS = {"epochs_per_layer": 10, "loss_reduction": "sum", "normalize_features": False, "hinge": False,
               "si_eval_samples": 1000,
               "neighbours": "data", "train_scope": "block", "pair_search_max_mb": 8192}
DEFAULTS = {**SI_DEFAULTS, "classifier_epochs": None, "feature_blocks": None, "layer_lr_schedule": "none"}


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


def si_triplet_terms(features: torch.Tensor, labels: torch.Tensor,
                     hinge: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
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


def triplet_terms(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                  hinge: bool = False) -> torch.Tensor:
    """||a - p||^2 - ||a - n||^2 per row (Eq. 7's summand); with `hinge`, max(that, 0): the triplet loss's hinge at
    margin 0, which penalises an anchor only while its nearest same-label point is not the nearer one."""
    terms = ((anchor - positive) ** 2).sum(dim=1) - ((anchor - negative) ** 2).sum(dim=1)
    return terms.clamp_min(0.0) if hinge else terms


def si_triplet_loss(features: torch.Tensor, labels: torch.Tensor, reduction: str = "sum",
                    hinge: bool = False) -> torch.Tensor:
    """J (Eq. 7-8): the sum over anchors ("sum", the paper) or its mean over the anchors used ("mean")."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown loss_reduction '{reduction}' ({', '.join(REDUCTIONS)})")
    terms, used = si_triplet_terms(features, labels, hinge)
    total = terms.sum()
    return total if reduction == "sum" else total / used.sum().clamp(min=1)


@torch.no_grad()
def data_pairs(chunks, device: torch.device, max_mb: float = 8192.0,
               block_rows: int = 4096, block_cols: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8 over a whole set (Algorithm 1, Step 3): (pos, neg), for every point the index of its nearest other
    point with the same label and of its nearest point with another label (squared Euclidean distance, ties to the
    first index; -1 where there is none). `chunks` yields (features, labels) of the points in order; the flattened
    features are kept on `device` when they fit in `max_mb`, else on the CPU and moved there block by block; the
    distances are computed block_rows x block_cols at a time."""
    zs, ys = [], []
    kept = 0.0
    for f, y in chunks:
        z = f.flatten(1).float()
        kept += z.numel() * 4 / 2**20
        zs.append(z if kept <= max_mb else z.cpu())
        ys.append(y.to(device))
    z_all = torch.cat([z.cpu() for z in zs]) if kept > max_mb else torch.cat(zs)
    labels = torch.cat(ys)
    m = len(labels)
    sq = (z_all * z_all).sum(dim=1)
    pos = torch.full((m,), -1, dtype=torch.long, device=device)
    neg = torch.full((m,), -1, dtype=torch.long, device=device)
    best_pos = torch.full((m,), float("inf"), device=device)
    best_neg = torch.full((m,), float("inf"), device=device)
    for r0 in range(0, m, block_rows):
        r1 = min(m, r0 + block_rows)
        a, sq_a, y_a = z_all[r0:r1].to(device), sq[r0:r1].to(device), labels[r0:r1]
        rows = torch.arange(r0, r1, device=device)
        for c0 in range(0, m, block_cols):
            c1 = min(m, c0 + block_cols)
            c, sq_c, y_c = z_all[c0:c1].to(device), sq[c0:c1].to(device), labels[c0:c1]
            d = (sq_a[:, None] + sq_c[None, :] - 2.0 * (a @ c.t())).clamp_min_(0.0)
            same = y_a[:, None] == y_c[None, :]
            cols = torch.arange(c0, c1, device=device)
            for best, index, mask in ((best_pos, pos, ~same | (rows[:, None] == cols[None, :])), (best_neg, neg, same)):
                value, arg = d.masked_fill(mask, float("inf")).min(dim=1)
                better = value < best[r0:r1]  # strictly: an earlier block keeps a tie
                best[r0:r1] = torch.where(better, value, best[r0:r1])
                index[r0:r1] = torch.where(better, arg + c0, index[r0:r1])
    return pos, neg


# ---------------------------------------------------------------- stages

def check_si_options(opts: dict, method: str) -> dict:
    if opts["loss_reduction"] not in REDUCTIONS:
        raise ValueError(f"{method}: unknown loss_reduction '{opts['loss_reduction']}' ({', '.join(REDUCTIONS)})")
    opts["epochs_per_layer"] = lw.positive_int(opts, "epochs_per_layer", method)
    opts["si_eval_samples"] = lw.positive_int(opts, "si_eval_samples", method, minimum=0)
    opts["normalize_features"] = bool(opts["normalize_features"])
    opts["hinge"] = bool(opts["hinge"])
    for key, allowed in (("neighbours", NEIGHBOURS), ("train_scope", TRAIN_SCOPES),
                         ("layer_lr_schedule", LAYER_LR_SCHEDULES)):
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
    z = torch.cat([module(f[i:i + bs]).flatten(1) for i in range(0, len(f), bs)])
    return separation_index(z, y)


def input_si(run: lw.Run, samples: int) -> float | None:
    """SI of the (normalised) input images of the eval subset; None for text or when SI monitoring is off."""
    if run.text or samples < 2:
        return None
    x, y = run.data.x_train[:samples], run.data.y_train[:samples]
    return separation_index(torch.cat([xb for xb, _ in run.plain(x, y, run.eval_batch_size)]), y)


def si_stage(run: lw.Run, index: int, layer: int, opts: dict, si_values: dict, pairs: dict) -> lw.Stage:
    """Train block `layer` on J (train_scope "block": blocks < layer frozen; "growing": blocks 0..layer trained
    together); si_values[layer] gets the layer's SI every epoch; `pairs` holds the stage's Eq. 8 partners
    (neighbours "data": searched over the training set when the stage's first batch arrives, kept for the stage;
    "data_epoch": searched again when each epoch's first batch arrives, `pairs["epoch"]` the global epoch they were
    found in)."""
    model = run.model
    growing = opts["train_scope"] == "growing"
    feats = lw.StageFeatures(run, 0 if growing else layer)
    module = nn.Sequential(*model.blocks[:layer + 1]) if growing else model.blocks[layer]
    reduction, normalize, samples = opts["loss_reduction"], opts["normalize_features"], opts["si_eval_samples"]
    hinge = opts["hinge"]
    data = opts["neighbours"] in ("data", "data_epoch")
    per_epoch = opts["neighbours"] == "data_epoch"

    def embed(f):
        z = module(f).flatten(1)
        return F.normalize(z, dim=1) if normalize else z, z

    def reduce(terms, used, z):
        j_sum = terms.sum()
        anchors = used.sum()
        loss = j_sum if reduction == "sum" else j_sum / anchors.clamp(min=1)
        return loss, {"loss": loss.detach(), "j_sum": j_sum.detach(), "anchors": anchors,
                      "norm": torch.linalg.vector_norm(z.detach(), dim=1).sum()}

    def step_batch(f, y):
        z_used, z = embed(f)
        terms, used = si_triplet_terms(z_used, y, hinge)
        return reduce(terms, used, z)

    def search():
        """Step 3 of Algorithm 1 for this layer: partners by Eq. 8 on the layer's output (eval mode, no grad) for
        the whole training set."""
        with lw.EpochTimer(run.device) as timer:
            module.eval()
            with torch.no_grad():
                chunks = ((embed(f)[0], y) for f, y in feats.in_order())
                pos, neg = data_pairs(chunks, run.device, opts["pair_search_max_mb"])
            module.train()
        pairs.update(layer=layer, epoch=run.epoch, pos=pos, neg=neg,
                     seconds=pairs.get("seconds", 0.0) + timer.seconds)

    def step_data(f, y, idx):
        # run.epoch counts the epoch under way, and a resumed run's is past the checkpointed pairs' epoch
        if pairs.get("layer") != layer or (per_epoch and pairs.get("epoch") != run.epoch):
            search()
        idx = idx.to(pairs["pos"].device)
        pos, neg = pairs["pos"][idx], pairs["neg"][idx]
        used = (pos >= 0) & (neg >= 0)
        b = len(f)
        z_used, z = embed(torch.cat([f, feats.gather(pos.clamp(min=0)), feats.gather(neg.clamp(min=0))]))
        za, zp, zn = z_used[:b], z_used[b:2 * b], z_used[2 * b:]
        terms = triplet_terms(za, zp, zn, hinge)
        return reduce(terms.masked_fill(~used, 0.0), used, z[:b])

    def summarize(s, n, batches):
        return {"train_loss": s["loss"] / batches, "train_loss_sum": s["j_sum"] / batches,
                "train_loss_mean": s["j_sum"] / max(s["anchors"], 1.0), "anchors_used": s["anchors"] / n,
                "feature_norm": s["norm"] / n}

    def evaluate(last):
        record = {}
        if samples >= 2:
            si_values[layer] = layer_si(run, feats, module, samples)
            record["si"] = si_values[layer]
            record.update({f"si_layer{i}": v for i, v in sorted(si_values.items())})
        if last:
            record.update(lw.evaluate_model(run, feats))
        return record

    return lw.Stage(index=index, layer=layer, features=feats, modules=[module],
                    step=step_data if data else step_batch, indexed=data, summarize=summarize,
                    epochs=opts["epochs_per_layer"], evaluate=evaluate,
                    **stage_schedule(run, opts, opts["epochs_per_layer"]))


def si_metrics(si_values: dict, si_in: float | None, pairs: dict | None = None) -> dict:
    out = {f"si_layer{i}": v for i, v in sorted(si_values.items())}
    if pairs and "seconds" in pairs:
        out["pair_search_time_s"] = pairs["seconds"]
    if si_values:
        out["si_final"] = si_values[max(si_values)]
    if si_in is not None:
        out["si_input"] = si_in
    return out


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    opts = check_si_options(lw.options(cfg, "si_forward", DEFAULTS), "si_forward")
    classifier_epochs = opts["classifier_epochs"] if opts["classifier_epochs"] is not None else opts["epochs_per_layer"]
    opts["classifier_epochs"] = lw.positive_int({"classifier_epochs": classifier_epochs}, "classifier_epochs",
                                                "si_forward")
    n_layers = lw.feature_blocks(opts, model, "si_forward")
    run = lw.Run(model, data, cfg, ctx, opts)
    flags = lw.hold_all(model)
    si_values = run.keep("si_values", {})
    pairs = run.keep("pairs", {})
    si_in = input_si(run, opts["si_eval_samples"])
    try:
        for layer in range(n_layers):
            if run.skip(layer):  # trained before a kill: the checkpointed model has it
                continue
            stage = si_stage(run, layer, layer, opts, si_values, pairs)
            lw.train_stage(run, stage)
            stage.features.close()
        last = lw.train_classifier(run, n_layers, opts["classifier_epochs"],
                                   **stage_schedule(run, opts, opts["classifier_epochs"]))
    finally:
        lw.restore_requires_grad(flags)
    return {**lw.final_metrics(run, last), **si_metrics(si_values, si_in, pairs)}
