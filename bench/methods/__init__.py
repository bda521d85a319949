"""Training methods, one module per method. Each method module exposes what every stage needs of it:
  DEFAULTS      its method_options and their defaults
  train         `train(model, data, cfg, ctx) -> final metrics`
  stage_epochs  `stage_epochs(cfg, n_blocks, n_layers=None, n_units=None) -> [epochs of each stage]`, from its config
                alone (bench.methods.schedule.stage_epochs)
  COST          what bench plan's cost model (bench/cost/method_costs.py) needs to know of its epochs (`Cost`)

The registry knows every method the papers compare (bench.claims.registry.METHODS); IMPLEMENTED maps the ones the
suite can run to their module: adding a method is adding its module and its line there. Cells of any other method
are reported as MISSING with the reason below.
"""

import importlib
from dataclasses import dataclass


class Diverged(Exception):
    """A training loss became NaN or infinite: the run stops cleanly and is recorded as DIVERGED at `epoch`."""

    def __init__(self, epoch: int, message: str):
        super().__init__(f"diverged at epoch {epoch}: {message}")
        self.epoch = epoch
        self.message = message


IMPLEMENTED = {
    "backprop": "bench.methods.backprop",
    "layer_to_layer": "bench.methods.layer_to_layer",
    "predsim": "bench.methods.predsim",
    "si_forward": "bench.methods.si",
    "fb_si": "bench.methods.fb_si",
    "greedy_layerwise": "bench.methods.greedy",
    "belilovsky_greedy": "bench.methods.belilovsky",
    "learn_drop": "bench.methods.learn_drop",
    "freezing": "bench.methods.learn_drop.freezing",
}


@dataclass(frozen=True)
class Cost:
    """What bench plan's cost model (bench/cost/method_costs.py) needs to know of a method's epochs.

    phases: the cost model's rule for the run's epochs (method_costs.PHASES): "end_to_end" (every epoch trains and
        evaluates the whole model), "predsim", "learn_drop", "freezing", "layer_to_layer" or "layerwise" (a stage
        per block, bench.methods.layerwise).
    parts: what the method builds beside the model, measured with it (method_costs.SIDE_PARTS; "": nothing).
    parts_options: the method_options those parts depend on (part of the key of bench plan's parts cache).
    si: (layer-wise) a stage trains its block by the SI loss: partners from the data and a pair search, no local
        predictor evaluated on the test set.
    classifier_stage: (layer-wise) a classifier (or end-to-end) stage follows the block stages, and each block stage
        evaluates the whole model at its last epoch.
    drops: layers leave the training during the run (Learn & Drop drops them, its Freezing baseline freezes them):
        its phases are its epochs, one stage, and a finished run's epochs say when each layer left.
    local_heads: (layer-wise) each block stage trains a local classifier head beside its block (greedy, Belilovsky).
    rest_end_to_end: (layer-wise) after its SI layers, a last stage trains the remaining blocks and the head end to
        end (FB-SI).
    stores_maps: the run keeps the dropped prefix's output maps and reads them back (Learn & Drop's store).
    """

    phases: str
    parts: str = ""
    parts_options: tuple = ()
    si: bool = False
    classifier_stage: bool = True
    drops: bool = False
    local_heads: bool = False
    rest_end_to_end: bool = False
    stores_maps: bool = False


def merge_options(cfg: dict, defaults: dict, method: str, error: type[Exception] = ValueError) -> dict:
    """The config's method_options over a method's `defaults`; a key the method does not know is an error."""
    given = dict(cfg.get("method_options") or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise error(f"unknown {method} method_options {sorted(unknown)} (known: {sorted(defaults)})")
    return {**defaults, **given}


def missing_reason(method: str) -> str:
    if method in IMPLEMENTED:
        return ""
    return f"method '{method}' is not implemented yet (no issue yet)"


def get(method: str):
    from bench import BenchError

    reason = missing_reason(method)
    if reason:
        raise BenchError(reason)
    return importlib.import_module(IMPLEMENTED[method])


def plan_module(method: str):
    """The method's module, for what bench plan reads of it (stage_epochs, DEFAULTS, COST); ValueError for a method
    it cannot cost."""
    if method not in IMPLEMENTED:
        raise ValueError(f"bench plan has no cost model for method '{method}'")
    return importlib.import_module(IMPLEMENTED[method])
