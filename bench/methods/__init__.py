"""Training methods, one module per method; each exposes `train(model, data, cfg, ctx) -> final metrics`.

The registry knows every method the papers compare (bench.claims.registry.METHODS); IMPLEMENTED maps the ones the
suite can run to their module. Cells of any other method are reported as MISSING with the reason below.
"""
import importlib


class Diverged(Exception):
    """A training loss became NaN or infinite: the run stops cleanly and is recorded as DIVERGED at `epoch`."""

    def __init__(self, epoch: int, message: str):
        super().__init__(f"diverged at epoch {epoch}: {message}")
        self.epoch = epoch
        self.message = message


IMPLEMENTED = {"backprop": "bench.methods.backprop", "layer_to_layer": "bench.methods.layer_to_layer",
               "predsim": "bench.methods.predsim", "si_forward": "bench.methods.si", "fb_si": "bench.methods.fb_si",
               "greedy_layerwise": "bench.methods.greedy", "belilovsky_greedy": "bench.methods.belilovsky",
               "learn_drop": "bench.methods.learn_drop", "freezing": "bench.methods.learn_drop"}
PLANNED: dict[str, str] = {}


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
    return f"method '{method}' is not implemented yet ({PLANNED.get(method, 'no issue yet')})"


def get(method: str):
    from bench import BenchError

    reason = missing_reason(method)
    if reason:
        raise BenchError(reason)
    return importlib.import_module(IMPLEMENTED[method])
