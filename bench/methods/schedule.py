"""How many epochs each stage of a run has, from its config alone: what `bench run` counts its progress against and
the cost model (bench/cost/method_costs.py) charges."""
LAYERWISE = ("si_forward", "fb_si", "greedy_layerwise", "belilovsky_greedy")
# default epochs of one layer-wise stage where method_options set none (each method's DEFAULTS)
STAGE_EPOCHS = {"si_forward": 10, "greedy_layerwise": 10, "belilovsky_greedy": 50, "fb_si": 10}


def stage_epochs(method: str, cfg: dict, n_blocks: int, n_layers: int | None = None) -> list[int]:
    """The epochs of each stage of a run (one entry for the end-to-end methods)."""
    opts = cfg.get("method_options") or {}
    epochs = cfg["epochs"]
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
