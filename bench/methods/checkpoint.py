"""Per-epoch checkpoints, so that a killed job resumes instead of restarting.

A method's epoch loop asks the run's `Checkpoint` to `restore` its objects (model, optimizers, schedulers, the
batches' generator, anything with state_dict/load_state_dict or get_state/set_state) and plain values
(accumulated training time, ...) before its first epoch, and to `save` them after every epoch. The file also
holds the global RNG states (torch CPU and CUDA, Python's `random`), the epoch records logged so far and the
MLflow run id, so that the resumed job continues the same MLflow run and writes the same result file an
uninterrupted run would have. Files are written atomically (temporary name, then rename) and read with
`torch.load(weights_only=True)`: tensors, numbers, strings, lists, tuples and dicts only, no pickled objects.
Where: beside the result file, `results/<profile>/runs/<experiment>/seed<k>.ckpt.pt`; removed once the result file
is written. A checkpoint written under another config (its fingerprint, the config hash) is ignored.

Writes (`background`, config `checkpoint_writes`): "sync" (the default) writes each checkpoint before the next
epoch starts, so a kill loses at most the epoch in progress. "background" (the GPU profiles) copies every state to
the host, then writes the file in a thread while the next epoch trains (one write at a time: a save waits for the
previous one): the same checkpoints, off the training's critical path (a full-width PredSim ResNet-50 with its
optimizers is 2.75 GB a checkpoint). A kill then loses the epoch in progress and, when it lands while the last
epoch's file is still being written, that epoch as well: the run resumes from the file before, trains that epoch
again, and its MLflow run holds that epoch's metrics twice (the result file once). The process waits for the last
write before it removes the file or leaves (`wait`).

Every method checkpoints: backprop and predsim (one epoch loop); the layer-wise methods (si_forward, fb_si,
greedy_layerwise, belilovsky_greedy: `Run.save`/`resume` in bench/methods/layerwise.py; finished stages are
skipped, the current one resumes at its next epoch); layer-to-layer (the stage and its fresh Adam); Learn & Drop
and Freezing (dropped layers, scores, and stored maps reopened from disk or recomputed exactly by replaying the
extraction epochs). Times are the one thing a resumed run does not reproduce: the killed partial epoch is lost.
"""

import os
import random
import tempfile
import threading
from pathlib import Path

import torch


def _state(obj):
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _load(obj, state):
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


def _on_host(value):
    """A copy of `value` (states: tensors in dicts, lists, tuples) whose tensors are the host's own: what a background
    write may keep while training goes on changing the originals."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _on_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_host(v) for v in value)
    return value


class Checkpoint:
    def __init__(self, path: Path | str, fingerprint: str = "", background: bool = False):
        """`fingerprint` identifies the run's config: a checkpoint written under another config is ignored.
        `background`: write each file in a thread (see the module's docstring)."""
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.background = background
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self.saved = self._read()
        self.records: list[dict] = list(self.saved["records"]) if self.saved else []
        self.mlflow_run_id: str | None = self.saved.get("mlflow_run_id") if self.saved else None
        self.resumed_from = 0  # epochs already done when this process started

    def _read(self) -> dict | None:
        """The saved checkpoint, or None; one line on stderr when a file is there but not used (nothing silent)."""
        import sys

        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(saved, dict):
                raise ValueError("not a checkpoint")
        except Exception as err:  # a truncated file, another torch version, a damaged disk: start over, never crash
            print(
                f"{self.path}: the checkpoint cannot be read ({type(err).__name__}: {str(err)[:120]}); the run starts "
                "from epoch 0 and replaces it",
                file=sys.stderr,
                flush=True,
            )
            return None
        if saved.get("fingerprint") != self.fingerprint:
            print(
                f"{self.path}: the checkpoint was written under another config; the run starts from epoch 0 and "
                "replaces it",
                file=sys.stderr,
                flush=True,
            )
            return None
        return saved

    def peek(self) -> dict | None:
        """The saved plain values and the epochs done ({"epoch": k, **values}), loading nothing: for a method whose
        objects depend on where it stopped (the stage it was in), to build them before `restore`."""
        return {"epoch": self.saved["epoch"], **self.saved["values"]} if self.saved else None

    def restore(self, objects: dict, values: dict) -> int:
        """Load the saved states into `objects` and `values` (updated in place); the number of epochs done."""
        if not self.saved:
            return 0
        missing = sorted(set(objects) - set(self.saved["objects"]))
        if missing:
            raise KeyError(f"checkpoint {self.path} has no state for {', '.join(missing)}")
        for name, obj in objects.items():
            _load(obj, self.saved["objects"][name])
        values.update(self.saved["values"])
        rng = self.saved["rng"]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        self.resumed_from = self.saved["epoch"]
        return self.saved["epoch"]

    def save(self, epoch: int, objects: dict, values: dict):
        """After `epoch` epochs: every object's state, the plain values, RNG states and the records so far."""
        rng = {"torch": torch.get_rng_state(), "python": list(random.getstate())}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "records": self.records,
            "mlflow_run_id": self.mlflow_run_id,
            "objects": {k: _state(o) for k, o in objects.items()},
            "values": dict(values),
            "rng": rng,
        }
        if not self.background:
            self._write(state)
            return
        state = _on_host({**state, "records": list(self.records)})  # before the next epoch changes anything
        self.wait()
        self._writer = threading.Thread(target=self._write_in_background, args=(state,), name="checkpoint", daemon=True)
        self._writer.start()

    def _write(self, state: dict):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _write_in_background(self, state: dict):
        try:
            self._write(state)
        except BaseException as err:  # noqa: BLE001 - raised in the training thread by the next save or wait
            self._error = err

    def wait(self):
        """Until the last background write is on disk; its error, if it failed."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def remove(self):
        self.wait()
        self.path.unlink(missing_ok=True)
