"""One GPU per running job on a multi-GPU machine (Snakemake's `gpu` resource only counts tokens; it does not say
which GPU a job gets).

A job claims a *slot*: an exclusive, non-blocking `flock` on one of the files `<lock dir>/gpu<k>.slot<j>`
(k < gpus, j < slots per GPU), held open for the life of the process, so that the kernel releases it when the job
ends in any way, SIGKILL included. Free GPUs are filled first (slot 0 of every GPU before slot 1 of any), so small
jobs share a GPU only when `slots_per_gpu` > 1 and every GPU already has a job. The job then sets
CUDA_VISIBLE_DEVICES to its GPU before CUDA initializes, and sees it as cuda:0.

Job packing: a job may need several slots of one GPU. With a plan (`bench plan --write`, workflow config `plan`),
a job whose model's forward pass is at least `small_job_mmacs` MMACs per sample takes all `slots_per_gpu` slots of
a GPU (and as many units of Snakemake's `gpu` resource), a smaller one (LeNet, the MNIST-size networks) one slot,
so several small jobs share a GPU while a large one has it to itself, and Snakemake keeps every GPU busy.
"""

import fcntl
import os
import tempfile
import time
from pathlib import Path

from bench import BenchError

LOCK_DIR = Path(os.environ.get("BENCH_GPU_LOCKS") or Path(tempfile.gettempdir()) / f"bench-gpu-slots-{os.getuid()}")
_held = []  # open lock files of this process: closing them (or exiting) frees the slots


def _try_lock(path: Path):
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def claim(
    gpus: int, slots_per_gpu: int = 1, wait_s: float = 600.0, lock_dir: Path | None = None, need: int = 1
) -> tuple[int, int]:
    """(GPU, first slot) of `need` free slots on one GPU, held until the process exits; waits up to `wait_s`.
    need = 1: a small job (it may share its GPU); need = slots_per_gpu: a job that takes a whole GPU."""
    if gpus < 1 or slots_per_gpu < 1 or not 1 <= need <= slots_per_gpu:
        raise BenchError(
            f"gpus ({gpus}) and slots per GPU ({slots_per_gpu}) must be at least 1, and the slots a "
            f"job needs ({need}) between 1 and slots per GPU"
        )
    folder = Path(lock_dir or LOCK_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        # lock every free slot of every GPU for a moment, keep `need` of the GPU with the most free (the emptiest
        # GPU first: slot 0 of every GPU before a second job shares one), release the rest
        free = {
            gpu: [(slot, f) for slot in range(slots_per_gpu) if (f := _try_lock(folder / f"gpu{gpu}.slot{slot}"))]
            for gpu in range(gpus)
        }
        best = max(free, key=lambda g: (len(free[g]), -g))
        keep = free[best][:need] if len(free[best]) >= need else []
        for _gpu, slots in free.items():
            for slot, f in slots:
                if (slot, f) not in keep:
                    f.close()
        if keep:
            _held.extend(f for _, f in keep)
            return best, keep[0][0]
        if time.monotonic() > deadline:
            raise BenchError(
                f"no {need} free GPU slot(s) on one GPU among {gpus} GPUs x {slots_per_gpu} slots after "
                f"{wait_s:.0f} s (locks in {folder}); is another workflow using them?"
            )
        time.sleep(0.5)


def use_one_gpu(gpus: int, slots_per_gpu: int = 1, need: int = 1) -> int:
    """Claim `need` slots of one GPU and make it the only one this process sees; returns the GPU's index."""
    gpu, _ = claim(gpus, slots_per_gpu, need=need)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return gpu


def release_all():
    while _held:
        _held.pop().close()
