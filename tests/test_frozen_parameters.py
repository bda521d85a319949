"""bench.methods.layerwise.frozen_parameters: every parameter frozen inside the block, the original requires_grad
flags back on exit, also when the block raises."""

import pytest
from torch import nn

from bench.methods.layerwise import frozen_parameters


def mixed_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)
    return model


def flags(model: nn.Module) -> list[bool]:
    return [p.requires_grad for p in model.parameters()]


def test_frozen_inside_and_restored_after():
    model = mixed_model()
    before = flags(model)
    with frozen_parameters(model):
        assert not any(flags(model))
        model[1].weight.requires_grad_(True)  # a stage turns on its own parameters
    assert flags(model) == before


def test_flags_restored_after_an_exception():
    model = mixed_model()
    before = flags(model)
    with pytest.raises(RuntimeError, match="stage failed"):
        with frozen_parameters(model):
            model[1].bias.requires_grad_(True)
            raise RuntimeError("stage failed")
    assert flags(model) == before
