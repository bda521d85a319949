"""Activation recomputation (gradient checkpointing) of one block: how a BlockNet trains in less device memory and
computes exactly the same thing.

`checkpointed(block, x)` runs the block under `torch.utils.checkpoint` (non-reentrant): the forward keeps only the
block's input, and the backward runs the block's forward again to get the tensors it needs. What could differ
between that second forward and the first, and why it does not:
  * dropout masks: the RNG state of the first forward is restored for the second (preserve_rng_state), and the
    global RNG is left where the first forward left it, so later steps draw what they would have drawn;
  * BatchNorm in training mode normalises with the batch's own statistics, the same in both forwards, but also
    updates its running statistics (running_mean, running_var, num_batches_tracked) as a side effect: the second
    forward would update them a second time. `_statistics_kept` (the recomputation's context) puts back every
    BN buffer of the block as it was before the recomputation, bit for bit (a momentum of 0 alone would not:
    0 x NaN is NaN, and num_batches_tracked would still count);
  * autocast: the checkpoint recomputes under the autocast state of the first forward.
An input changed in place between the forward and the backward is an error (checkpoint saves its inputs through
autograd, whose version counters catch it), not a silent difference. Not combinable with torch.compile of the
forward: compiled checkpoints accept only TorchDispatchMode contexts (bench.methods.training refuses the pair).
"""

from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextmanager
def _statistics_kept(module: nn.Module):
    """The running statistics of `module`'s BatchNorms in training mode are, on exit, what they were on entry."""
    norms = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    names = ("running_mean", "running_var", "num_batches_tracked")
    kept = [[getattr(m, n).clone() for n in names] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in zip(norms, kept):
                for n, value in zip(names, values):
                    getattr(m, n).copy_(value)


def _contexts(block: nn.Module):
    """checkpoint's context_fn: nothing around the first forward, the BN statistics kept around the recomputation."""
    return lambda: (nullcontext(), _statistics_kept(block))


def checkpointed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """block(x), its saved tensors dropped after the forward and recomputed in the backward (module docstring)."""
    return checkpoint(block, x, use_reentrant=False, preserve_rng_state=True, context_fn=_contexts(block))
