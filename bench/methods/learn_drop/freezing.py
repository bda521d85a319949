"""Learn & Drop's "Freezing" baseline (registry method `freezing`, docs/methods/learn-drop.md): Learn & Drop's
training loop (bench.methods.learn_drop.loop, which reads cfg["method"]), its options and its schedule; what
differs for the registry is what its epochs cost: the frozen layers stay in the forward pass."""

from bench.methods import Cost
from bench.methods.learn_drop import DEFAULTS, stage_epochs, train

COST = Cost("freezing", parts="cuts", parts_options=("shortcut_position",), drops=True)

__all__ = ["COST", "DEFAULTS", "stage_epochs", "train"]
