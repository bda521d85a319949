"""How many epochs each stage of a run has, from its config alone: what `bench run` counts its progress against and
the cost model (bench/cost/method_costs.py) charges."""
LAYERWISE = ("si_forward", "fb_si", "greedy_layerwise", "belilovsky_greedy")
# default epochs of one layer-wise stage where method_options set none (each method's DEFAULTS)
STAGE_EPOCHS = {"si_forward": 10, "greedy_layerwise": 10, "belilovsky_greedy": 50, "fb_si": 10}


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


def stage_epochs(method: str, cfg: dict, n_blocks: int, n_layers: int | None = None,
                 n_units: int | None = None) -> list[int]:
    """The epochs of each stage of a run (one entry for the end-to-end methods). n_units: PredSim's local-loss
    units (bench.methods.predsim: finer than the BlockNet's n_blocks, a residual unit's every conv and every hidden
    Linear of the head are one), needed by its sequential schedule only."""
    opts = cfg.get("method_options") or {}
    epochs = cfg["epochs"]
    if method == "predsim" and opts.get("schedule", "simultaneous") == "sequential":
        if n_units is None:
            raise ValueError("predsim's sequential schedule has a stage per local-loss unit: their number "
                             "(n_units) is not given")
        return predsim_stage_epochs(epochs, n_units)
    if method in ("backprop", "learn_drop", "freezing", "predsim"):
        return [epochs]
    if method == "layer_to_layer":
        stages = opts.get("stages") or (n_layers // 2 if n_layers else None)
        if not stages:
            raise ValueError("layer_to_layer sets no `stages` and the model's Keras layer count is not given")
        return [int(opts.get("epochs_per_stage", epochs))] * int(stages)
    if method not in LAYERWISE:
        raise ValueError(f"bench plan has no cost model for method '{method}'")
    per = int(opts.get("epochs_per_layer", STAGE_EPOCHS[method]))
    if method == "fb_si":
        return [per] * int(opts.get("si_layers", 1)) + [epochs]
    n = int(opts.get("feature_blocks") or n_blocks)
    if method == "belilovsky_greedy":
        return [per] * n
    return [per] * n + [int(opts.get("classifier_epochs") or per)]
