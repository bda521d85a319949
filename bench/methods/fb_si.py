"""Forward-backward SI baseline of Karimi et al.'s Tables 3/5/8 (Karimi, Kalhor, Ahmadian, BMVC 2023;
arXiv 2201.05217), as the proxy of docs/methods/si-forward.md#34-baselines.

The original trains only the first conv layer to maximise SI with a ranking loss solved by a "quasi least-squares"
technique, then trains the remaining layers by ordinary backprop with cross-entropy; its code is not public. Proxy:
the first `si_layers` blocks (default 1: block 0, the first conv with its BN/ReLU, or VD-CNN's embedding + temporal
conv) are trained one after the other with Karimi's SI loss J (Eq. 7, bench.methods.si) for `epochs_per_layer`
epochs each, exactly as in si_forward, and frozen; then every later block and the head are trained end to end with
cross-entropy under the E2E recipe of the config: cfg epochs, optimizer, lr, momentum, weight decay and the step
schedule lr_milestones/lr_gamma (applied per epoch of that stage, as MultiStepLR). The frozen prefix's features are
cached when exact (bench.methods.layerwise). The test set is evaluated after every end-to-end epoch (the model's
own forward); the reported accuracy is the last epoch's. A killed run resumes in either phase (the end-to-end phase
is a stage of bench.methods.layerwise.train_stage too, its in-place LR schedule included).

method_options (defaults): si_layers (1, docs/methods/si-forward.md#34-baselines), epochs_per_layer (10, paper Table 1),
loss_reduction
("sum"), normalize_features (false, a deviation: see bench.methods.si), hinge (false), si_eval_samples (1000),
cache_prefix (true), prefix_cache_max_mb (8192).

Records: the SI stages' as si_forward's; the end-to-end stage's train_loss, train_accuracy, test_loss,
test_accuracy (stage = si_layers, layer = -1, or the number of blocks if si_layers is all of them). Final metrics:
test_accuracy, test_error, test_loss, train_time_s, train_loss, train_accuracy, si_layer<i> (of the SI-trained
blocks), si_final, si_input, si_train_time_s, e2e_train_time_s, and the prefix cache metrics of
bench.methods.layerwise.
"""

from torch import nn

from bench.methods import Cost, si
from bench.methods import layerwise as lw
from bench.methods.training import Context

DEFAULTS = {**si.SI_DEFAULTS, "si_layers": 1}
COST = Cost("layerwise", si=True, rest_end_to_end=True)


def stage_epochs(cfg: dict, n_blocks: int, n_layers: int | None = None, n_units: int | None = None) -> list[int]:
    """A stage per SI block (option si_layers), then the end-to-end stage of the run's epochs."""
    si_layers = int((cfg.get("method_options") or {}).get("si_layers", DEFAULTS["si_layers"]))
    return [lw.epochs_per_layer(cfg, DEFAULTS)] * si_layers + [cfg["epochs"]]


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    opts = si.check_si_options(lw.options(cfg, "fb_si", DEFAULTS), "fb_si")
    n_si = lw.positive_int(opts, "si_layers", "fb_si", minimum=0)
    if n_si > len(model.blocks):
        raise ValueError(f"fb_si: si_layers {n_si} but the model has {len(model.blocks)} blocks")
    run = lw.Run(model, data, cfg, ctx, opts)
    with lw.frozen_parameters(model):
        si_values = run.keep("si_values", {})
        pairs = run.keep("pairs", {})
        times = run.keep("times", {"si_train_time_s": 0.0})
        si_in = si.input_si(run, opts["si_eval_samples"]) if n_si else None
        for layer in range(n_si):
            if run.skip(layer):  # trained before a kill: the checkpointed model has it
                continue
            stage = si.si_stage(run, layer, layer, opts, si_values, pairs)
            lw.train_stage(run, stage)
            stage.features.close()
        if not run.skip(n_si - 1):  # the SI stages ended in this process (else: the time saved when they did)
            times["si_train_time_s"] = run.train_time
        stage = lw.classifier_stage(run, n_si, lw.positive_int(cfg, "epochs", "fb_si"), first=n_si)
        stage.milestones, stage.gamma = tuple(cfg.get("lr_milestones", [])), cfg.get("lr_gamma", 0.1)
        last = lw.train_stage(run, stage)
        stage.features.close()
    return {
        **lw.test_metrics(last),
        **run.final_metrics(),
        "train_loss": last["train_loss"],
        "train_accuracy": last["train_accuracy"],
        "si_train_time_s": times["si_train_time_s"],
        "e2e_train_time_s": run.train_time - times["si_train_time_s"],
        **si.si_metrics(si_values, si_in, pairs),
    }
