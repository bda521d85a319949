"""Greedy layer-wise training with temporary linear softmax heads: the "Greedy layer-wise" and "Modified greedy
layer-wise" rows of Karimi et al.'s Tables 3/5/8 (docs/methods/si-forward.md#34-baselines).

Reading. Bengio, Lamblin, Popovici & Larochelle (2007) train a deep network one layer at a time, each new layer on
top of the frozen earlier ones; their supervised variant trains the new layer together with a temporary output
layer on the supervised criterion and then discards that output layer. Karimi et al. name the baseline without
details, so the recommended reading of docs/methods/si-forward.md#34-baselines is implemented: for each block L in
order, blocks < L frozen
(eval mode, features under no_grad, cached when exact: bench.methods.layerwise), a fresh temporary classifier
flatten -> Linear(features of block L -> K) (PyTorch default init) is put on top of block L and block L + that head
are trained with cross-entropy for `epochs_per_layer` epochs (a fresh optimizer of the config's kind per block, no
LR schedule); then block L is frozen and the head discarded. Finally `model.head` (the architecture's classifier)
is trained with cross-entropy for `classifier_epochs` epochs on the frozen trunk, as in si_forward, so the two
methods differ only in the per-layer objective. Karimi's "Modified" greedy rows are read as this same procedure
(the paper gives no detail of the modification; the grid may map both rows here).

method_options (defaults): epochs_per_layer (10, as si_forward: paper Table 1), classifier_epochs (None =
epochs_per_layer), si_eval_samples (1000; 0 = off: the SI of each trained layer on the eval subset, a diagnostic
for comparing with si_forward), feature_blocks (None = every block; as si_forward's: the leading blocks trained
greedily, the rest trained with the head), cache_prefix (true), prefix_cache_max_mb (8192).

Per-epoch records (block stages): epoch (global), stage, layer, stage_epoch, lr, train_loss and train_accuracy
(block L + temporary head), stage_test_loss and stage_test_accuracy (the same predictor on the test set),
si / si_layer<i>, epoch_time_s, prefix_time_s, prefix_cache, eval_time_s; at the last epoch of a stage also
test_loss/test_accuracy of the full model (later blocks and head untrained). Classifier stage: as si_forward's.
Final metrics: test_accuracy, test_error, test_loss, train_time_s, train_loss, train_accuracy,
layer<L>_test_accuracy (block L's temporary head at the end of its stage), si_layer<i>, si_final, si_input, and
the prefix cache metrics.
"""

from torch import nn

from bench.methods import Cost, si
from bench.methods import layerwise as lw
from bench.methods.training import Context

DEFAULTS = {"epochs_per_layer": 10, "classifier_epochs": None, "si_eval_samples": 1000, "feature_blocks": None}
COST = Cost("layerwise", parts="linear_heads", local_heads=True)


def stage_epochs(cfg: dict, n_blocks: int, n_layers: int | None = None, n_units: int | None = None) -> list[int]:
    """A stage per feature block, then the classifier's."""
    return lw.classified_stage_epochs(cfg, DEFAULTS, n_blocks)


def temporary_head(features: int, num_classes: int) -> nn.Sequential:
    """Bengio et al.'s temporary output layer: a linear softmax classifier on the flattened block output."""
    return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))


def block_stage(run: lw.Run, layer: int, opts: dict, si_values: dict, head_accuracy: dict) -> lw.Stage:
    model = run.model
    feats = lw.StageFeatures(run, layer)
    block = model.blocks[layer]
    head = temporary_head(lw.output_features(feats, block), run.data.num_classes).to(run.device)
    samples = opts["si_eval_samples"]

    def predict(f):
        return head(block(f))

    def evaluate(last):
        loss, acc, _ = lw.evaluate_features(predict, [block, head], feats.test(), run.device)
        head_accuracy[layer] = acc
        record = {"stage_test_loss": loss, "stage_test_accuracy": acc}
        if samples >= 2:
            si_values[layer] = si.layer_si(run, feats, block, samples)
            record["si"] = si_values[layer]
            record.update({f"si_layer{i}": v for i, v in sorted(si_values.items())})
        if last:
            record.update(lw.evaluate_model(run, feats))
        return record

    return lw.Stage(
        index=layer,
        layer=layer,
        features=feats,
        modules=[block, head],
        step=lw.ce_step(predict),
        summarize=lw.ce_summary,
        epochs=opts["epochs_per_layer"],
        evaluate=evaluate,
    )


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    opts = lw.options(cfg, "greedy_layerwise", DEFAULTS)
    opts["epochs_per_layer"] = lw.positive_int(opts, "epochs_per_layer", "greedy_layerwise")
    if opts["classifier_epochs"] is None:
        opts["classifier_epochs"] = opts["epochs_per_layer"]
    opts["classifier_epochs"] = lw.positive_int(opts, "classifier_epochs", "greedy_layerwise")
    opts["si_eval_samples"] = lw.positive_int(opts, "si_eval_samples", "greedy_layerwise", minimum=0)
    n_layers = lw.feature_blocks(opts, model, "greedy_layerwise")
    run = lw.Run(model, data, cfg, ctx, opts)
    with lw.frozen_parameters(model):
        si_values = run.keep("si_values", {})
        head_accuracy = run.keep("head_accuracy", {})
        si_in = si.input_si(run, opts["si_eval_samples"])
        for layer in range(n_layers):
            if run.skip(layer):  # trained before a kill: the checkpointed model has it (its head is discarded)
                continue
            stage = block_stage(run, layer, opts, si_values, head_accuracy)
            lw.train_stage(run, stage)
            stage.features.close()
            del stage  # the temporary head is discarded
        last = lw.train_classifier(run, n_layers, opts["classifier_epochs"])
    return {
        **lw.final_metrics(run, last),
        **{f"layer{i}_test_accuracy": v for i, v in sorted(head_accuracy.items())},
        **si.si_metrics(si_values, si_in),
    }
