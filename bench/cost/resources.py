"""What a job holds at its peak, predicted before it runs: device memory, host memory and disk (`bench plan --fit`).

Counted from the model's shapes on the meta device (no arithmetic) and the config, per job:

device (the GPU it trains on; on a CPU run the host):
  * the data: every split is kept on the training device as uint8 images or token indices, labels as int64
    (bench.data.loader);
  * the model's state: parameters, their gradients and the optimizer's state (Adam: two per parameter; SGD with
    momentum: one), and the local heads a method trains beside the model (PredSim's similarity and prediction
    branches, greedy's and Belilovsky's heads); PredSim with optimizer_offload on (`_offload`): one unit's
    gradients, the states left on the device and one offloaded unit's staged;
  * activations: what the backward pass keeps, counted as the float outputs of every leaf module for one sample,
    times the training batch, over the part of the model one step trains: the whole model (backprop, Learn & Drop,
    Freezing, layer-to-layer, the end-to-end stages), the largest stage of the sequential layer-wise methods (its
    block as saved when trained on its own, its input too where its first layer saves it, with its head:
    Belilovsky's convolutional auxiliary head counted with the block, `aux_stage_saved`; SI with data neighbours
    steps anchors and their two partners, three times the batch, and holds its loss's tensors, `_stage_tensors`:
    rehearsing DBpedia's VD-CNN-9 SI showed them missing, 14.6 GB measured against 8.0 predicted), or the largest
    PredSim unit with its branches (each unit's graph is freed after its own backward); where the job recomputes
    its activations (config activation_checkpointing, `recompute_rule`), the blocks it trains end to end keep only
    their inputs and one block's saved tensors at a time (`_end_to_end_bytes`, part RECOMPUTED);
  * caches and stores: the frozen prefix's features (the layer-wise methods without augmentation, when they fit in
    prefix_cache_max_mb) and Learn & Drop's stored maps (the largest block output for every training sample: in
    feature_store_max_mb, else on disk);
  * transient, of which the peak holds the largest (they never overlap): a training step's saved tensors, an
    evaluation batch's maps, the SI pair search's panels and tiles (bench.methods.si.search_plan on this node).
host:
  * the process: Python, torch, MLflow and the suite imported (PROCESS_BYTES, measured: see below);
  * the data as it is read (the decoded splits, and a resized or subset copy beside them);
  * on a GPU: a checkpoint's copy of the model and optimizer state while it is written, the pair search's pinned
    host buffers and PredSim's offloaded optimizer states (pinned); on a CPU run, everything the device part above
    holds (and the checkpoint's copy where checkpoints are written in the background).
disk: the checkpoint (model + optimizer state, written every epoch) and Learn & Drop's maps when they go to disk.

Activations are the uncertain part (in-place activations, saved inputs versus outputs, cuDNN workspaces are not
modelled); `bench plan --compare` puts the predicted host peak beside the measured one of finished CPU runs.
"""

import math
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from bench import experiments as ex
from bench import methods
from bench.claims.datasets import DATASETS

# The resident memory of a `bench run` process before it touches data (torch, torchvision, ptflops, MLflow's SQL
# store and the suite imported): measured on this machine, a smoke LeNet job started on its own, 870 MiB at its
# peak (its data and model are below 1 MiB). A job forked from the workflow's warm worker shares the worker's pages
# and measures less (about 560 MiB). Each run records what it measured (host_rss_start_mb); `bench plan --compare`
# predicts a finished run from that.
PROCESS_BYTES = 870 * 2**20
# On a CPU a training step's resident memory grows by more than the tensors it saves: the forward's and backward's
# temporaries are freed to the C allocator, which keeps them resident. Measured here (tests/test_resources.py: one
# forward and backward of a paper-width model in a fresh process, resident growth / (saved tensors + gradients)):
# VGG-8b at batch 64 1.14, CIFAR ResNet-18 at batch 64 1.55-1.71. A CPU job's activations are charged 1.4 x what it
# saves; a GPU's (the caching allocator reuses freed blocks, and the peak counts live tensors) 1 x, until a GPU
# measurement (bench devicecheck) says otherwise.
CPU_STEP_OVERHEAD = 1.4
FLOAT = 4
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1}  # per parameter (SGD: its momentum buffer; 0 without momentum)


@dataclass(frozen=True)
class Node:
    """A machine a job must fit: its GPU's memory and its host memory, in bytes (gpu 0: a CPU-only node)."""

    gpu_bytes: float
    host_bytes: float

    @classmethod
    def parse(cls, text: str) -> "Node":
        """'gpu=24,host=64' (GB) -> Node; ValueError naming the part that is wrong."""
        sizes = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            key, _, value = part.partition("=")
            if key not in ("gpu", "host") or not value:
                raise ValueError(f"--fit {text!r}: expected gpu=<GB>,host=<GB>, got {part!r}")
            try:
                sizes[key] = float(value) * 1e9
            except ValueError:
                raise ValueError(f"--fit {text!r}: {key}={value!r} is not a number of GB") from None
            if sizes[key] < 0:
                raise ValueError(f"--fit {text!r}: {key} must be at least 0 GB")
        if "host" not in sizes:
            raise ValueError(f"--fit {text!r}: the host's memory is needed (host=<GB>)")
        return cls(sizes.get("gpu", 0.0), sizes["host"])


PAPERS_NODE = Node(24e9, 64e9)  # the papers' GPU class (one 24 GB RTX 3090) and 64 GB of host memory


def config_model(cfg: dict, dataset: str) -> nn.Module:
    """The model a config trains, for the dataset's shapes (built on the current default device)."""
    from bench.models import build_model

    info = DATASETS[dataset]
    return build_model(
        cfg["architecture"], info.channels, info.num_classes, cfg.get("input_size") or info.size, cfg["model"]
    )


def saved_bytes(model: nn.Module, parts: list[nn.Module], x: torch.Tensor, alone: bool = False) -> list[float]:
    """Bytes autograd saves for the backward pass in a training-mode forward of `model` on `x`, per part of
    `parts` (the parts run in order; each storage counted once, by its largest saved view, in the part that saved
    it first; parameters and buffers left out: they are the model's, not the batch's). `alone`: per part, every
    storage it saves, also one an earlier part saved first (its input, mostly): what a part saves when it is
    trained on its own, as a layer-wise stage is. Works on the meta device (shapes only) and gives the CPU's count
    there."""
    first, own = _saved_per_part(model, parts, x)
    return own if alone else first


def _saved_per_part(model: nn.Module, parts: list[nn.Module], x: torch.Tensor) -> tuple[list[float], list[float]]:
    """`saved_bytes` of both kinds from one forward: (each storage in the part that saved it first, every storage
    in each part that saved it)."""
    weights = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    first, own = [dict() for _ in parts], [dict() for _ in parts]
    current = [0]
    owner: dict = {}  # storage -> the part that saved it first

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in weights:  # the largest view of each storage that is saved (the same on meta and the CPU)
            size = t.numel() * t.element_size()
            for saved, part in ((first, owner.setdefault(key, current[0])), (own, current[0])):
                saved[part][key] = max(saved[part].get(key, 0), size)
        return t

    handles = [
        part.register_forward_pre_hook(lambda m, i, k=k: current.__setitem__(0, k)) for k, part in enumerate(parts)
    ]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.train()(x)
    finally:
        for h in handles:
            h.remove()
    return [float(sum(b.values())) for b in first], [float(sum(b.values())) for b in own]


@cache
def _shapes(architecture: str, model_json: str, dataset: str, input_size, device: str = "cpu") -> dict:
    """Per block (and the head): parameter elements, the bytes autograd saves for the backward pass per sample
    (`saved_bytes` of a batch of two, halved), and output elements per sample; the input's elements. On `device`
    (meta: shapes only, no arithmetic; the counts are the CPU's)."""
    import json

    cfg = {"architecture": json.loads(architecture), "model": json.loads(model_json), "input_size": input_size}
    batch = 2  # per-sample bytes from a batch of two: a batch of one can take other paths (e.g. BN refuses it)
    with torch.device(device):
        model = config_model(cfg, dataset)
        parts = list(model.blocks) + [model.head]
        outs = [0] * len(parts)
        handles = [
            part.register_forward_hook(
                lambda m, i, o, k=k: outs.__setitem__(k, (o[0] if isinstance(o, tuple) else o)[0].numel())
            )
            for k, part in enumerate(parts)
        ]
        try:
            saved, alone = _saved_per_part(
                model,
                parts,
                torch.zeros((batch, *model.input_shape), dtype=getattr(model, "input_dtype", torch.float32)),
            )
        finally:
            for h in handles:
                h.remove()
        params = [sum(p.numel() for p in part.parameters()) for part in parts]
        return {
            "params": params,
            "saved": [b / batch for b in saved],
            "saved_alone": [b / batch for b in alone],
            "outs": outs,
            "input": math.prod(model.input_shape),
        }


def aux_stage_saved(cfg: dict, dataset: str) -> list[float]:
    """Belilovsky's stages: per block j, the bytes a stage saves per sample, block j and its auxiliary head
    (bench.models.simcnn.aux_heads) trained together on block j's input, each storage once; counted on meta,
    kept in the plan's disk cache."""
    import json

    from bench.cost.disk_cache import disk_cached
    from bench.models import simcnn

    def count() -> list[float]:
        with torch.device("meta"):
            model = config_model(cfg, dataset)
            base = (cfg.get("architecture") or {}).get("base", "")
            heads = simcnn.aux_heads(base, model.num_classes, model.input_shape[-1], cfg.get("model") or {})
            x, saved = torch.zeros((2, *model.input_shape)), []
            for block, head in zip(model.blocks, heads):
                stage = nn.Sequential(block, head)
                saved.append(saved_bytes(stage, [stage], x)[0] / 2)
                with torch.no_grad():
                    x = block(x)
        return saved

    key = json.dumps([cfg["architecture"], cfg["model"], dataset, cfg.get("input_size")], sort_keys=True)
    return disk_cached("aux stages " + key, count)


CPU_COUNT_MAX_PARAMS = 2_000_000  # a smaller model is counted faster on the CPU than through meta decompositions


def shapes(cfg: dict, dataset: str) -> dict:
    """`_shapes` of a config's model: on the CPU for small models (a real forward of two samples is quicker than
    the meta device's Python decompositions), on meta for larger ones (no arithmetic); the counts are the same."""
    import json

    key = (
        json.dumps(cfg["architecture"], sort_keys=True),
        json.dumps(cfg["model"], sort_keys=True),
        dataset,
        cfg.get("input_size"),
    )
    from bench.cost.disk_cache import disk_cached

    def count() -> dict:
        with torch.device("meta"):
            params = sum(p.numel() for p in config_model(cfg, dataset).parameters())
        return _shapes(*key, "cpu" if params <= CPU_COUNT_MAX_PARAMS else "meta")

    if key not in _SHAPES:  # counting the paper profile's models takes a minute: kept on disk as the plan's parts
        _SHAPES[key] = disk_cached("shapes " + json.dumps(key), count)
    return _SHAPES[key]


_SHAPES: dict = {}


def _optimizer_states(cfg: dict) -> int:
    kind = str(cfg.get("optimizer", "sgd")).lower()
    if kind == "sgd" and not cfg.get("momentum"):
        return 0
    return OPTIMIZER_STATES.get(kind, 2)


def _job_samples(cfg: dict, info, samples: tuple[int, int] | None) -> tuple[int, int]:
    """(training, test) samples of the job: `samples`, else the config's subsets capped at the dataset's splits."""
    if samples is not None:
        return samples
    return (
        min(cfg["data"].get("train_samples") or info.train_size, info.train_size),
        min(cfg["data"].get("test_samples") or info.test_size, info.test_size),
    )


def _step_activations(exp, cfg: dict, s: dict, opts: dict, recompute: bool = False) -> tuple[float, int]:
    """(the bytes a training step's backward keeps, over the part of the model one step trains; the parameters of
    the local heads a method trains beside the model). `recompute`: the blocks trained end to end recompute their
    activations (`_end_to_end_bytes`); a layer-wise stage's single block and PredSim's units keep theirs."""
    cost, batch, info = methods.plan_module(exp.method).COST, cfg["batch_size"], DATASETS[exp.dataset]
    blocks_acts, head_acts = s["saved"][:-1], s["saved"][-1]  # bytes per sample
    n = len(blocks_acts)
    aux_params = 0
    if cost.phases == "layerwise":
        anchors = 3 if cost.si and opts.get("neighbours", "data") != "batch" else 1
        head = head_acts if cost.local_heads else 0
        alone = s["saved_alone"][:-1]  # a stage trains its block on its own: the block saves its input too
        if cost.parts == "aux_heads":  # Belilovsky: the block with its convolutional auxiliary head, counted whole
            alone, head = aux_stage_saved(cfg, exp.dataset), 0
        stages = [anchors * batch * (a + head) + _stage_tensors(cost, opts, s, i, batch) for i, a in enumerate(alone)]
        acts = max(stages, default=anchors * batch * head_acts)
        if cost.rest_end_to_end:  # its last stage trains the blocks after the SI layers and the head end to end
            acts = max(acts, _end_to_end_bytes(s, batch, int(opts.get("si_layers", n)), recompute))
        if cost.local_heads:
            aux_params = max(s["outs"][:-1], default=0) * info.num_classes
    elif cost.phases == "predsim":
        # one unit's graph at a time (freed after its own backward), with its similarity branch's output (as large
        # as the unit's) and its decoder: at most a block's and one more output
        acts = batch * (max(blocks_acts + [head_acts]) + max(s["outs"]) * FLOAT)
        aux_params = predsim_aux_params(cfg, exp.dataset)
    else:
        acts = _end_to_end_bytes(s, batch, 0, recompute)
    return acts, aux_params


def _stage_tensors(cost, opts: dict, s: dict, i: int, batch: int) -> float:
    """What an SI step on block i holds beyond the tensors the block saves trained on its own (bytes; the block's
    input is among those where its first layer saves it), as its backward starts (bench.methods.si): the two
    differences the triplet terms square, saved for the backward (2 batches of outputs), and with data neighbours
    the batch's features, which the caller holds beside the concatenation of anchors and partners fed to the block.
    The gathered partners and the L2-normalised copy (normalize_features) are gone by then (not saved). The other
    layer-wise methods: nothing more (their loss is a head's, counted with the block)."""
    if not cost.si:
        return 0.0
    differences = 2 * FLOAT * s["outs"][i]
    if opts.get("neighbours", "data") == "batch":
        return batch * differences
    return batch * (differences + FLOAT * (s["outs"][i - 1] if i > 0 else s["input"]))


def _end_to_end_bytes(s: dict, batch: int, first: int, recompute: bool) -> float:
    """What a step that trains blocks[first:] and the head end to end keeps: every saved tensor; or, recomputed per
    block (bench.models.recompute), each block's input (its predecessor's output; the last block's output counted
    too, which the head may keep, as a margin for the output gradient), one block's saved tensors at a time (the
    largest: the backward recomputes one block after the other) and the head's (never recomputed)."""
    if not recompute:
        return batch * sum(s["saved"][first:])
    blocks = range(first, len(s["saved"]) - 1)
    inputs = FLOAT * sum(s["outs"][i] for i in blocks)
    return batch * (inputs + max((s["saved"][i] for i in blocks), default=0.0) + s["saved"][-1])


RECOMPUTED = "activations (recomputed per block)"  # the part's name where the rule says recompute


def recompute_rule(setting: str, need_bytes: float, available_bytes: float) -> tuple[bool, str]:
    """Whether a job recomputes its blocks' activations (config `activation_checkpointing`), and why: on or off as
    the config says; `auto` only where the job would not fit its GPU otherwise: its predicted device peak with every
    activation kept (`need_bytes`: the step's activations, the model and optimizer state, the data and caches) is
    more than the GPU has (`available_bytes`: the node's GPU in a plan, the free memory at a run's start). No GPU
    (`available_bytes` 0): auto is off, a CPU run's memory is the host's and rarely the limit. The plan
    (`job_resources`) and the run (bench.run.runner) both decide here."""
    if setting != "auto":
        return setting == "on", f"activation_checkpointing: {setting}"
    if not available_bytes:
        return False, "auto: no GPU"
    if need_bytes <= available_bytes:
        return False, f"auto: the job fits without it ({gb(need_bytes)} of {gb(available_bytes)})"
    return True, f"auto: the job would not fit without it ({gb(need_bytes)} > {gb(available_bytes)})"


def _nothing_to_recompute(method: str) -> str:
    """Why a method has no activations to recompute ('' where it has): PredSim runs its units on their own, and a
    layer-wise stage trains one block on its own; only the blocks trained end to end (BlockNet.run_blocks) can."""
    cost = methods.plan_module(method).COST
    if cost.phases == "predsim" or (cost.phases == "layerwise" and not cost.rest_end_to_end):
        return f"{method} trains no blocks end to end: nothing to recompute"
    return ""


def _recompute(exp, cfg: dict, s: dict, opts: dict, device: dict, transient: dict, node: Node, cpu: bool) -> dict:
    """`recompute_rule` for the job on `node` ({"on", "why"}), given the device parts without the transient ones;
    where it says recompute, the transient activations are the recomputed ones (part RECOMPUTED)."""
    from bench.methods.training import checkpointing_setting

    if _nothing_to_recompute(exp.method):
        return {"on": False, "why": _nothing_to_recompute(exp.method)}
    plain = sum(device.values()) + max(transient.values())
    on, why = recompute_rule(checkpointing_setting(cfg), plain, 0.0 if cpu else node.gpu_bytes)
    if on:
        acts = _step_activations(exp, cfg, s, opts, recompute=True)[0] * (CPU_STEP_OVERHEAD if cpu else 1.0)
        transient[RECOMPUTED] = min(acts, transient.pop("activations"))
    return {"on": on, "why": why}


def recompute_choice(exp, profile: str, node: Node, cpu: bool = False) -> dict:
    """{"on", "why"}: whether the job recomputes its activations on `node` (`recompute_rule`, as `job_resources`
    decides it); the resource model runs only where the answer depends on it (auto, on a GPU)."""
    from bench.methods.training import checkpointing_setting

    if _nothing_to_recompute(exp.method):
        return {"on": False, "why": _nothing_to_recompute(exp.method)}
    setting = checkpointing_setting(ex.config(exp, profile))
    if setting != "auto" or cpu or not node.gpu_bytes:
        on, why = recompute_rule(setting, 0.0, 0.0 if cpu else node.gpu_bytes)
        return {"on": on, "why": why}
    return job_resources(exp, profile, node, cpu=cpu)["recompute"]


def run_memory_settings(exp, profile: str, free: tuple[float, float], cpu: bool) -> dict:
    """The memory switches of a run on the memory free at its start (`free`: GPU, host bytes; an unmeasured host
    is taken as the papers' node's): activation_checkpointing and optimizer_offload with their reasons, by the rules
    the plan applies (`recompute_choice`, `offload_choice`). The command line hands this to bench.run.runner
    (RunOptions.memory_rules): the run stage comes before this one and does not import it."""
    gpu, host = free
    node = Node(gpu, host if math.isfinite(host) else PAPERS_NODE.host_bytes)
    recompute = recompute_choice(exp, profile, node, cpu=cpu)
    offload = offload_choice(exp, profile, node, cpu=cpu)
    return {
        "activation_checkpointing": recompute["on"],
        "activation_checkpointing_why": recompute["why"],
        "optimizer_offload": offload["on"],
        "optimizer_offload_units": offload["units"],
        "optimizer_offload_why": offload["why"],
    }


def _prefix_cache_bytes(s: dict, train_n: int, test_n: int, opts: dict) -> float:
    """The largest frozen-prefix feature cache of the stages (train split first, then test, each kept only where
    it fits what prefix_cache_max_mb leaves)."""
    cap = float(opts.get("prefix_cache_max_mb", 8192)) * 2**20
    caches = []
    for i in range(1, len(s["saved"]) - 1):
        train_b, test_b = train_n * s["outs"][i - 1] * FLOAT, test_n * s["outs"][i - 1] * FLOAT
        held = (train_b if train_b <= cap else 0) + (
            test_b if test_b <= cap - (train_b if train_b <= cap else 0) else 0
        )
        caches.append(held)
    return max(caches)


def _pair_searches(s: dict, train_n: int, eval_batch: int, opts: dict, node: Node, cpu: bool) -> list[dict]:
    """The SI pair search's plan (bench.methods.si.search_plan on this node) for every SI layer's output."""
    from bench.cost.method_costs import PAIR_SEARCH_MAX_MB
    from bench.methods.si import search_plan

    n = len(s["saved"]) - 1
    cap = float(opts.get("pair_search_max_mb", PAIR_SEARCH_MAX_MB)) * 2**20
    device_budget = min(cap, 0.5 * (node.host_bytes if cpu else node.gpu_bytes))
    host_budget = 0.0 if cpu else 0.5 * node.host_bytes
    return [
        search_plan(train_n, d, min(train_n, eval_batch), device_budget, host_budget)
        for d in s["outs"][: int(opts.get("si_layers", n))]
    ]


def _stored_maps(device: dict, disk: dict, train_n: int, s: dict, opts: dict):
    """Learn & Drop's maps after the dropped layers, for the whole training set (at most a block's): on the device
    within feature_store_max_mb, else on disk."""
    store = train_n * max(s["outs"][:-1], default=0) * FLOAT
    if store <= float(opts.get("feature_store_max_mb", 8192)) * 2**20:
        device["stored maps"] = store
    else:
        disk["stored maps"] = store


def job_resources(
    exp,
    profile: str,
    node: Node = PAPERS_NODE,
    samples: tuple[int, int] | None = None,
    cpu: bool = False,
    process_bytes: float = PROCESS_BYTES,
) -> dict:
    """Predicted peaks of one (experiment, seed) job: device_bytes, host_bytes, disk_bytes, and the parts of each
    (a dict per resource, name -> bytes). `cpu`: the job trains on the host (no GPU): the device parts go to the
    host. `process_bytes`: the process before the job's data (a finished run measured it: host_rss_start_mb)."""
    from bench.cost.method_costs import EVAL_BATCH_SIZE

    cfg = ex.config(exp, profile)
    train_n, test_n = _job_samples(cfg, DATASETS[exp.dataset], samples)
    s = shapes(cfg, exp.dataset)
    opts = cfg.get("method_options") or {}
    eval_batch = cfg.get("eval_batch_size", EVAL_BATCH_SIZE)
    method = exp.method
    params = sum(s["params"])
    states = 2 + _optimizer_states(cfg)  # weights, gradients, optimizer state
    n = len(s["saved"]) - 1  # blocks
    data_element = 1  # uint8 images and tokens (bench.data.tensors)
    data = (train_n + test_n) * (s["input"] * data_element + 8)

    device = {"data": data}
    acts, aux_params = _step_activations(exp, cfg, s, opts)
    device["model and optimizer"] = (params * states + aux_params * states) * FLOAT
    # what a step holds only while it runs: a training step's saved tensors, an evaluation batch's two largest
    # maps, the pair search's panels and tiles; they never overlap, and the allocator reuses one's memory for the
    # next, so the peak holds the largest of them
    transient = {
        "activations": acts * (CPU_STEP_OVERHEAD if cpu else 1.0),
        "evaluation": eval_batch * max(s["outs"] + [s["input"]]) * FLOAT * 2,
    }
    exact = not _augments(cfg) and opts.get("cache_prefix", True)
    cost = methods.plan_module(method).COST
    if cost.phases == "layerwise" and exact and n > 1:
        device["prefix cache"] = _prefix_cache_bytes(s, train_n, test_n, opts)
    host = {"process": process_bytes, "data as read": 2 * data}
    disk = {"checkpoint": (params + aux_params) * (1 + _optimizer_states(cfg)) * FLOAT}
    if cost.si and opts.get("neighbours", "data") in ("data", "data_epoch"):
        searches = _pair_searches(s, train_n, eval_batch, opts, node, cpu)
        transient["pair search"] = max(p["device_bytes"] for p in searches)
        if not cpu:
            host["pair search (pinned)"] = max(p["host_bytes"] for p in searches)
    if cost.stores_maps:
        _stored_maps(device, disk, train_n, s, opts)
    recompute = _recompute(exp, cfg, s, opts, device, transient, node, cpu)
    offload = _offload(exp, cfg, device, transient, host, node, cpu)
    largest = max(transient, key=transient.get)
    device[largest] = transient[largest]
    if cpu:
        host.update({k: v for k, v in device.items() if k != "data"})
        device = {}
        if cfg.get("checkpoint_writes") == "background":  # the states copied for the writer thread (as on a GPU)
            host["checkpoint copy"] = disk["checkpoint"]
    else:
        host["checkpoint copy"] = disk["checkpoint"]
    return {
        "experiment": exp.id,
        "paper": exp.paper,
        "method": method,
        "device_bytes": sum(device.values()),
        "host_bytes": sum(host.values()),
        "disk_bytes": sum(disk.values()),
        "device": device,
        "host": host,
        "disk": disk,
        "transient": transient,
        "recompute": recompute,
        "offload": offload,
    }


def predsim_aux_params(cfg: dict, dataset: str) -> int:
    """Parameters of PredSim's similarity and prediction branches for this config's model (built on meta)."""

    return sum(aux for _, _, aux in predsim_units(cfg, dataset))


def predsim_units(cfg: dict, dataset: str) -> tuple:
    """(name, its own parameters (conv, BN, shortcut), its similarity and prediction branches' parameters) per
    PredSim local-loss unit of this config's model, in forward order (built on meta): what each unit's optimizers
    hold."""
    import json

    from bench.cost.disk_cache import disk_cached

    key = json.dumps({k: v for k, v in cfg.items() if k != "sources"}, sort_keys=True)
    return disk_cached(f"predsim units {dataset} {key}", lambda: _predsim_units(key, dataset))


@cache
def _predsim_units(key: str, dataset: str) -> tuple:
    import json

    from bench.methods.predsim import PredSim
    from bench.run.measure import meta_shape_passthrough

    cfg = json.loads(key)
    with torch.device("meta"), meta_shape_passthrough():
        model = config_model(cfg, dataset)
        ps = PredSim(model, model.num_classes, cfg)
        return tuple(
            (u.name, sum(p.numel() for p in u.params + u.shortcut_params), sum(p.numel() for p in a.parameters()))
            for u, a in zip(ps.units, ps.aux)
        )


OFFLOAD_OFF = {"on": False, "units": [], "why": "off: only PredSim steps an optimizer per unit"}


def _offload(exp, cfg: dict, device: dict, transient: dict, host: dict, node: Node, cpu: bool) -> dict:
    """PredSim's freed gradients and offloaded optimizer states on `node` (bench.methods.offload.offload_rule,
    the run's rule too), {"on", "units" (names), "why"}, given the device parts without the transient ones. Where
    it is on, "model and optimizer" holds the weights, the gradients of one unit (the largest) and of the output
    layer, and the states left on the device; "optimizer states (staged)" the largest offloaded unit's (the one
    staging buffer); the host the offloaded states, pinned."""
    from bench.methods.offload import offload_rule, offload_setting

    setting = offload_setting(cfg)
    if exp.method != "predsim":
        return OFFLOAD_OFF
    units = predsim_units(cfg, exp.dataset)
    grads = [(own + aux) * FLOAT for _, own, aux in units]
    held = [g * _optimizer_states(cfg) for g in grads]
    need = sum(device.values()) + max(transient.values())
    choice = offload_rule(setting, need, 0.0 if cpu else node.gpu_bytes, grads, held)
    if choice["on"]:
        off = [held[i] for i in choice["units"]]
        device["model and optimizer"] -= sum(grads) - max(grads) + sum(off)
        if off:
            device["optimizer states (staged)"] = max(off)
            host["optimizer states (pinned)"] = sum(off)
    return {**choice, "units": [units[i][0] for i in choice["units"]]}


def offload_choice(exp, profile: str, node: Node, cpu: bool = False) -> dict:
    """{"on", "units", "why"}: PredSim's memory switches for the job on `node` (`_offload`); the resource model
    runs only where the answer depends on it."""
    from bench.methods.offload import offload_rule, offload_setting

    setting = offload_setting(ex.config(exp, profile))
    if exp.method != "predsim":
        return OFFLOAD_OFF
    if setting == "off" or (setting == "auto" and (cpu or not node.gpu_bytes)):
        return offload_rule(setting, 0.0, 0.0, [], [])
    return job_resources(exp, profile, node, cpu=cpu)["offload"]


def _augments(cfg: dict) -> bool:
    from bench.data.loader import augments

    return augments(cfg.get("augment"))


def overflow(job: dict, node: Node) -> list[str]:
    """What does not fit `node`: '<resource> <predicted> > <available> (largest part: <name> <bytes>)'."""
    out = []
    for resource, available in (("device", node.gpu_bytes), ("host", node.host_bytes)):
        if resource == "device" and not node.gpu_bytes:
            continue
        need = job[f"{resource}_bytes"]
        if need > available:
            name, size = max(job[resource].items(), key=lambda kv: kv[1])
            out.append(f"{resource} {gb(need)} > {gb(available)} (largest part: {name} {gb(size)})")
    return out


def gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB"
