"""A model's parts as the cost model counts them (bench.cost.method_costs.measure_parts): its blocks, layers and
MACs, counted on the meta device and cached in memory and on disk (counting all the paper profile's models takes
minutes), or timed on a device and cached in memory for this process."""

import json

import torch

from bench import methods
from bench.cost import method_costs, resources
from bench.cost.disk_cache import disk_cached
from bench.run.measure import forward_macs, meta_shape_passthrough


def counted_parts(exp, cfg: dict) -> dict:
    """The model's parts, untimed: counted on the meta device (shapes only, no arithmetic: the MACs are the same as
    on the CPU, in a fraction of the time for full-width models), on the CPU where a model cannot run on meta."""
    try:
        # everything built here is on meta: the model, and the local heads the method builds beside it
        with torch.device("meta"), meta_shape_passthrough():
            model = resources.config_model(cfg, exp.dataset)
            return method_costs.measure_parts(model, exp.method, cfg, forward_macs(model, "pytorch", copy_model=False))
    except (NotImplementedError, RuntimeError):
        model = resources.config_model(cfg, exp.dataset)
        return method_costs.measure_parts(model, exp.method, cfg, forward_macs(model, "pytorch"))


def _parts_key(exp, cfg: dict) -> str:
    opts = cfg.get("method_options") or {}
    cost = methods.plan_module(exp.method).COST
    kind = exp.method if cost.parts else "blocks"  # a method that builds parts beside the model has its own
    return json.dumps(
        {
            "dataset": exp.dataset,
            "architecture": cfg["architecture"],
            "model": cfg["model"],
            "input_size": cfg.get("input_size"),
            "kind": kind,
            "options": {k: opts.get(k) for k in cost.parts_options},
        },
        sort_keys=True,
    )


_TIMED: dict = {}


def model_parts(exp, cfg: dict, device: torch.device | None = None) -> dict:
    """The model's parts for the method's cost (bench.cost.method_costs.measure_parts). Untimed (MACs), cached in memory
    and in <cache_dir()>/plan_parts-<code digest>.json (counting all the paper profile's models takes
    minutes); timed on `device` at the config's batch size, cached in memory for this process."""
    key = _parts_key(exp, cfg)
    if device is not None:
        timed_key = (key, str(device), cfg["batch_size"])
        if timed_key not in _TIMED:
            model = resources.config_model(cfg, exp.dataset)
            _TIMED[timed_key] = method_costs.measure_parts(
                model, exp.method, cfg, model_parts(exp, cfg)["total"], device, cfg["batch_size"]
            )
        return _TIMED[timed_key]
    return disk_cached(key, lambda: counted_parts(exp, cfg))
