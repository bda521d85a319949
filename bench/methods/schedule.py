"""How many epochs each stage of a run has, from its config alone: what `bench run` counts its progress against and
the cost model (bench/cost/method_costs.py) charges. Each method module says it (its `stage_epochs`); the
schedules several methods share are here."""

from bench.methods import plan_module


def end_to_end_epochs(cfg: dict, n_blocks: int, n_layers: int | None = None, n_units: int | None = None) -> list[int]:
    """One stage of all the run's epochs (the end-to-end methods)."""
    return [cfg["epochs"]]


def predsim_stage_epochs(epochs: int, n_units: int) -> list[int]:
    """PredSim's sequential schedule (bench/methods/predsim.py): the run's `epochs` split evenly over its
    n_units + 1 stages (each local-loss unit, then the output layer), max(1, epochs // (n_units + 1)) each, the
    remainder going to the last stages, one each: they add up to `epochs` whenever epochs >= n_units + 1 (fewer
    epochs: one per stage)."""
    if n_units < 1:
        raise ValueError(f"predsim's sequential schedule needs at least one local-loss unit, not {n_units}")
    stages = n_units + 1
    per = max(1, epochs // stages)
    extra = max(0, epochs - per * stages)
    return [per + (i >= stages - extra) for i in range(stages)]


def stage_epochs(
    method: str, cfg: dict, n_blocks: int, n_layers: int | None = None, n_units: int | None = None
) -> list[int]:
    """The epochs of each stage of a run (one entry for the end-to-end methods), as the method's module says.
    n_layers: the model's Keras layers (layer_to_layer's default stages); n_units: PredSim's local-loss units
    (bench.methods.predsim: finer than the BlockNet's n_blocks, a residual unit's every conv and every hidden Linear
    of the head are one), needed by its sequential schedule only."""
    return plan_module(method).stage_epochs(cfg, n_blocks, n_layers, n_units)
