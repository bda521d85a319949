"""bench.methods' registry: every method module exposes what every stage needs of it (DEFAULTS, train,
stage_epochs, COST), and the cost model has a rule for what each COST names."""

import pytest

from bench import methods
from bench.cost import method_costs
from bench.methods.schedule import stage_epochs


@pytest.mark.parametrize("method", sorted(methods.IMPLEMENTED))
def test_every_method_module_plugs_in(method):
    module = methods.get(method)
    assert isinstance(module.DEFAULTS, dict) and callable(module.train) and callable(module.stage_epochs)
    assert isinstance(module.COST, methods.Cost)
    assert module.COST.phases in method_costs.PHASES and module.COST.parts in method_costs.SIDE_PARTS


def test_default_epochs_per_layer_come_from_the_method_defaults():
    cfg = {"epochs": 7, "method_options": {}}
    for method in ("si_forward", "greedy_layerwise", "belilovsky_greedy"):
        per = methods.get(method).DEFAULTS["epochs_per_layer"]
        assert stage_epochs(method, cfg, 3)[:3] == [per] * 3
    fb_si = methods.get("fb_si").DEFAULTS
    assert stage_epochs("fb_si", cfg, 3) == [fb_si["epochs_per_layer"]] * fb_si["si_layers"] + [7]


def test_a_method_outside_the_registry_has_no_plan():
    with pytest.raises(ValueError, match="no cost model"):
        methods.plan_module("dropout")
    assert "not implemented" in methods.missing_reason("dropout")
