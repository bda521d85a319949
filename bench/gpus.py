"""One GPU per running job on a multi-GPU machine (Snakemake's `gpu` resource only counts tokens; it does not say
which GPU a job gets).

A job claims a *slot*: an exclusive, non-blocking `flock` on one of the files `<lock dir>/gpu<k>.slot<j>`
(k < gpus, j < slots per GPU), held open for the life of the process, so that the kernel releases it when the job
ends in any way, SIGKILL included. Free GPUs are filled first (slot 0 of every GPU before slot 1 of any), so small
jobs share a GPU only when `slots_per_gpu` > 1 and every GPU already has a job. The job then sets
CUDA_VISIBLE_DEVICES to its GPU before CUDA initializes, and sees it as cuda:0.
"""
import fcntl
import os
import tempfile
import time
from pathlib import Path

from bench import BenchError

LOCK_DIR = Path(os.environ.get("BENCH_GPU_LOCKS") or Path(tempfile.gettempdir()) / f"bench-gpu-slots-{os.getuid()}")
_held = []  # open lock files of this process: closing them (or exiting) frees the slots


def claim(gpus: int, slots_per_gpu: int = 1, wait_s: float = 600.0, lock_dir: Path | None = None) -> tuple[int, int]:
    """(GPU, slot) of a free slot, held until the process exits; waits up to `wait_s` for one to free up."""
    if gpus < 1 or slots_per_gpu < 1:
        raise BenchError(f"gpus ({gpus}) and slots per GPU ({slots_per_gpu}) must be at least 1")
    folder = Path(lock_dir or LOCK_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for slot in range(slots_per_gpu):
            for gpu in range(gpus):
                f = open(folder / f"gpu{gpu}.slot{slot}", "a+")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.close()
                    continue
                _held.append(f)
                return gpu, slot
        if time.monotonic() > deadline:
            raise BenchError(f"no free GPU slot among {gpus} GPUs x {slots_per_gpu} slots after {wait_s:.0f} s "
                             f"(locks in {folder}); is another workflow using them?")
        time.sleep(0.5)


def use_one_gpu(gpus: int, slots_per_gpu: int = 1) -> int:
    """Claim a slot and make its GPU the only one this process sees; returns the GPU's index."""
    gpu, _ = claim(gpus, slots_per_gpu)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return gpu


def release_all():
    while _held:
        _held.pop().close()
