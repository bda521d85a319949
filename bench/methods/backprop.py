"""Plain end-to-end backpropagation with cross-entropy: the papers' "Global", "End-to-End", "SGD" and
"Standard" columns. One optimizer over all parameters, the LR schedule stepped per epoch, the test set
evaluated after every epoch; the reported accuracy is the final epoch's (docs/methods/predsim.md#16-ambiguities item
8)."""

import torch
from torch import nn

from bench.methods import Cost
from bench.methods.schedule import end_to_end_epochs as stage_epochs  # noqa: F401  (the registry reads it)
from bench.methods.training import (
    Context,
    EpochTimer,
    ce_step,
    compiled_step,
    evaluate,
    fast_settings,
    make_optimizer,
    make_scheduler,
    train_test_batches,
)

DEFAULTS: dict = {}  # no method_options
COST = Cost("end_to_end")


def train(model: nn.Module, data, cfg: dict, ctx: Context) -> dict:
    device = ctx.device
    train_batches, test_batches = train_test_batches(data, cfg, device, ctx.seed)
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    step = compiled_step(ce_step(model, optimizer), fast_settings(cfg, device))  # forward to optimizer step
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "batches": train_batches.gen}
    done = {"train_time": 0.0, "test_loss": float("nan"), "test_acc": float("nan")}
    start = ctx.resume(state, done)
    train_time, test_loss, test_acc = done["train_time"], done["test_loss"], done["test_acc"]
    for epoch in ctx.bar(range(start, cfg["epochs"]), desc=cfg["experiment"], unit="epoch"):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        lr = optimizer.param_groups[0]["lr"]
        with EpochTimer(device) as timer:
            for x, y in ctx.bar(train_batches, desc=f"epoch {epoch + 1}", unit="batch"):
                loss, logits = step(x, y)  # detached
                loss_sum += loss * len(y)
                correct += (logits.argmax(1) == y).sum()
            scheduler.step()
        train_time += timer.seconds
        with EpochTimer(device) as eval_timer:
            test_loss, test_acc = evaluate(model, test_batches, device)
        n = len(data.y_train)
        ctx.log_epoch(
            {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum.item() / n,
                "train_accuracy": 100.0 * correct.item() / n,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "epoch_time_s": timer.seconds,
                "eval_time_s": eval_timer.seconds,
            }
        )
        ctx.epoch_done(epoch + 1, state, {"train_time": train_time, "test_loss": test_loss, "test_acc": test_acc})
    return {
        "test_accuracy": test_acc,
        "test_error": 100.0 - test_acc,
        "test_loss": test_loss,
        "train_time_s": train_time,
    }
