"""Belilovsky, Eickenberg & Oyallon's greedy training of SimCNN with k-hidden-layer auxiliary problems
(docs/methods/belilovsky.md; eugenium/layerCNN cifar.py): the "Belilovsky" rows of Karimi et al.'s Table 4.

For j = 0..J-1 (J trunk blocks of simcnn_k1|k2|k3): blocks < j frozen (requires_grad off, BN in eval mode; their
features recomputed every batch when augmentation is on, cached when exact: bench.methods.layerwise), block j and a
fresh auxiliary head j (bench.models.simcnn.aux_heads: (k-1) x [conv3x3-BN-ReLU] -> avg-pool 2x2 -> BN -> Linear)
are trained with cross-entropy for `epochs_per_layer` epochs (layerCNN --nepochs 50) with the config's optimizer
(SGD momentum 0.9, weight decay 5e-4), lr (0.1) multiplied by lr_gamma (0.2) at each of lr_milestones, counted in
epochs of the block's stage ([15, 30, 45]: layerCNN's `epoch % epochdecay == 0`). At each decay layerCNN builds a
new SGD optimizer, so the momentum buffers restart from zero (`reset_optimizer_at_decay`, default true; false
changes the LR in place, MultiStepLR-style). After block j's stage its aux head's test logits are kept for the
ensemble and the head is discarded, except the last one: the network's prediction after training is the aux
head of the last block (docs/methods/belilovsky.md#22-auxiliary-heads), so its weights and BN statistics are copied into
`model.head` (the
model's head is built with the same k-specific architecture; checked), and `model(x)` is the trained predictor.

The test set is evaluated after every epoch with the current predictor, blocks <= j + aux head j (layerCNN's
test()); `ensemble_test_accuracy` is layerCNN's ensemble: the logits of aux heads 0..j (each from the end of its
stage, the current one from this epoch) weighted 2^i / sum 2^i. The reported accuracy is the last head's
(single model), whose value the README's ~88.3/90.4/91.7 are taken to be (docs/methods/belilovsky.md#23-schedule).

method_options (defaults): epochs_per_layer (50, layerCNN), reset_optimizer_at_decay (true, layerCNN),
ensemble (true: compute the ensemble diagnostic), cache_prefix (true), prefix_cache_max_mb (8192).

Per-epoch records: epoch (global), stage, layer (= j), stage_epoch, lr, train_loss, train_accuracy, test_loss and
test_accuracy (blocks <= j + aux head j), ensemble_test_accuracy, epoch_time_s, prefix_time_s, prefix_cache,
eval_time_s. Final metrics: test_accuracy, test_error, test_loss (model(x) after the copy), train_time_s,
train_loss, train_accuracy, ensemble_test_accuracy, layer<j>_test_accuracy (aux head j at the end of its stage),
aux_params (parameters of all aux heads, the last one included), optimizers_created, and the prefix cache metrics.
"""

import torch
from torch import nn

from bench.methods import Cost
from bench.methods import layerwise as lw
from bench.methods.training import Context, evaluate
from bench.models import simcnn

DEFAULTS = {"epochs_per_layer": 50, "reset_optimizer_at_decay": True, "ensemble": True}
COST = Cost("layerwise", parts="aux_heads", classifier_stage=False, local_heads=True)


def stage_epochs(cfg: dict, n_blocks: int, n_layers: int | None = None, n_units: int | None = None) -> list[int]:
    """A stage per block (the last one trains the model's head as its auxiliary head): no classifier stage."""
    return lw.block_stage_epochs(cfg, DEFAULTS, n_blocks)


def same_architecture(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return repr(a) == repr(b) and list(sa) == list(sb) and all(sa[k].shape == sb[k].shape for k in sa)


def ensemble_accuracy(logits: list[torch.Tensor], labels: torch.Tensor) -> float:
    """layerCNN's ensemble: sum_i w_i logits_i with w_i = 2^i / sum_j 2^j (i = 0 the first block's head)."""
    weights = [2.0**i for i in range(len(logits))]
    total = sum(w * z for w, z in zip(weights, logits)) / sum(weights)
    return 100.0 * (total.argmax(1) == labels).double().mean().item()


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    opts = lw.options(cfg, "belilovsky_greedy", DEFAULTS)
    epochs = lw.positive_int(opts, "epochs_per_layer", "belilovsky_greedy")
    base = (cfg.get("architecture") or {}).get("base", "")
    if base not in simcnn.BASES:
        raise ValueError(f"belilovsky_greedy trains SimCNN (simcnn_k1|k2|k3) only, got '{base}'")
    device = ctx.device
    heads = [
        h.to(device) for h in simcnn.aux_heads(base, data.num_classes, data.x_train.shape[-1], cfg.get("model") or {})
    ]
    if len(heads) != len(model.blocks) or not same_architecture(heads[-1], model.head):
        raise ValueError(f"belilovsky_greedy: the model's head is not the last aux head of {base}")
    run = lw.Run(model, data, cfg, ctx, opts)
    run.objects["aux_heads"] = nn.ModuleList(heads)  # checkpointed: the finished ones, the current, the next ones
    with lw.frozen_parameters(model):
        test_y = run.test_batches.y
        kept = run.keep("kept", [])  # test logits of each finished aux head
        head_accuracy = run.keep("head_accuracy", {})
        for j, (block, head) in enumerate(zip(model.blocks, heads)):
            if run.skip(j):  # trained before a kill: block and head come with the checkpoint
                if j < len(heads) - 1:
                    lw.freeze(head)
                continue
            feats = lw.StageFeatures(run, j)

            def predict(f, block=block, head=head):
                return head(block(f))

            def evaluate_stage(last, j=j, block=block, head=head, feats=feats, predict=predict):
                loss, acc, logits = lw.evaluate_features(
                    predict, [block, head], feats.test(), device, keep_logits=opts["ensemble"]
                )
                record = {"test_loss": loss, "test_accuracy": acc}
                if opts["ensemble"]:
                    record["ensemble_test_accuracy"] = ensemble_accuracy(kept + [logits], test_y)
                    if last:
                        kept.append(logits)
                if last:
                    head_accuracy[j] = acc
                return record

            stage = lw.Stage(
                index=j,
                layer=j,
                features=feats,
                modules=[block, head],
                step=lw.ce_step(predict),
                summarize=lw.ce_summary,
                epochs=epochs,
                evaluate=evaluate_stage,
                milestones=tuple(cfg.get("lr_milestones", [])),
                gamma=cfg.get("lr_gamma", 0.1),
                reset_on_decay=bool(opts["reset_optimizer_at_decay"]),
            )
            last = lw.train_stage(run, stage)
            feats.close()
            if j < len(heads) - 1:
                lw.freeze(head)
    model.head.load_state_dict(heads[-1].state_dict())
    test_loss, test_acc = evaluate(model, run.test_batches, device)
    out = {
        "test_accuracy": test_acc,
        "test_error": 100.0 - test_acc,
        "test_loss": test_loss,
        **run.final_metrics(),
        "train_loss": last["train_loss"],
        "train_accuracy": last["train_accuracy"],
        **{f"layer{j}_test_accuracy": v for j, v in sorted(head_accuracy.items())},
        "aux_params": float(sum(p.numel() for h in heads for p in h.parameters())),
        "optimizers_created": float(run.optimizers_created),
    }
    if opts["ensemble"]:
        out["ensemble_test_accuracy"] = ensemble_accuracy(kept, test_y)
    return out
