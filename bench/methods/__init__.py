"""Training methods, one module per method; each exposes `train(model, data, cfg, ctx) -> final metrics`.

The registry knows every method the papers compare (bench.registry.METHODS); IMPLEMENTED maps the ones the
suite can run to their module. Cells of any other method are reported as MISSING with the reason below.
"""
import importlib

IMPLEMENTED = {"backprop": "bench.methods.backprop"}
PLANNED = {
    "predsim": "issue 5", "si_forward": "issue 5", "fb_si": "issue 5", "greedy_layerwise": "issue 5",
    "belilovsky_greedy": "issue 5", "layer_to_layer": "issue 5", "learn_drop": "issue 6", "freezing": "issue 6",
}


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
