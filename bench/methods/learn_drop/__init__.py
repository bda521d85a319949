"""Learn & Drop (Cruciata et al., seed 003; registry method `learn_drop`) and its "Freezing" baseline
(registry method `freezing`), docs/methods/learn-drop.md. One `train(model, data, cfg, ctx)` serves both: it reads
cfg["method"].

The method in four parts, each readable on its own:
  scores.py   the scoring rule: Eq. 1-4, the epoch's gradient sums, the drop decision (`select_drop`)
  layers.py   the conv layers it scores and drops, as steps on a state (`conv_layers`, `Chain`), and their MACs
  store.py    the stored feature maps the head trains on after a drop (`FeatureStore`)
  loop.py     the training loop: schedule, optimizer, resume, the per-epoch record and final metrics, options
"""

from bench.methods import Cost
from bench.methods.learn_drop.loop import DEFAULTS, train
from bench.methods.schedule import end_to_end_epochs as stage_epochs

COST = Cost("learn_drop", parts="cuts", parts_options=("shortcut_position",), drops=True, stores_maps=True)

__all__ = ["COST", "DEFAULTS", "stage_epochs", "train"]
