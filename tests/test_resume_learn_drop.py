"""Resume of Learn & Drop and Freezing: a job SIGKILLed in an epoch after a drop decision resumes from its last
per-epoch checkpoint with the dropped/frozen layers and the stored maps back, and ends with exactly the epoch
records and final metrics of an uninterrupted run (CPU, one thread); stored maps come back from the killed run's
disk store when it is still there, else recomputed by replaying the extraction epochs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_method_learn_drop import DATA, build, cfg_for
from test_resume import bench_run, kill_in_epoch, trajectory, uninterrupted

from bench.methods import learn_drop as ld
from bench.methods.checkpoint import Checkpoint
from bench.methods.learn_drop.store import FeatureStore
from bench.methods.training import FAULT_ENV, Context

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TESTS = Path(__file__).resolve().parent
TIMES = (
    "epoch_time_s",
    "io_time_s",
    "eval_time_s",
    "train_time_s",
    "io_time_s_total",
    "eval_time_s_total",
    "timestamp_ms",
)  # the times an epoch took and when it was logged: a resumed run's own


def untimed(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMES}


# ---------------------------------------------------------------- the smoke experiments, killed and run again


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,resumed_from",
    [
        # smoke: 4 epochs; warm-up 1 epoch, layers dropped/frozen at the end of epoch 2; Learn & Drop extracts their
        # maps in epoch 3 and trains on them in epoch 4 (killed in the first batch of the epoch after `resumed_from`)
        ("learn_drop", 2),  # killed in the extraction epoch 3: the drop is pending, the maps not yet stored
        ("learn_drop", 3),  # killed in epoch 4: the stored maps must come back
        ("freezing", 3),  # killed in epoch 4: the frozen layers must stay frozen
    ],
)
def test_a_killed_smoke_run_resumes_after_the_drop_and_matches(tmp_path, smoke_runs, method, resumed_from):
    experiment = f"cruciata-mnist-vgg11-{method}"
    reference = uninterrupted(smoke_runs, experiment)
    drops = [r["epoch"] for r in reference["epochs"] if r["newly_dropped"] > 0]
    assert drops and drops[0] <= resumed_from  # the kill lands in an epoch after the first drop decision
    assert reference["metrics"]["dropped_layers_final"] > 0

    out = tmp_path / "run" / "seed0.json"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    killed = bench_run(experiment, out, {**env, FAULT_ENV: kill_in_epoch(experiment, resumed_from + 1)})
    assert killed.returncode == -9 and not out.exists()  # SIGKILL
    assert torch.load(out.with_name("seed0.ckpt.pt"), weights_only=True)["epoch"] == resumed_from
    resumed = bench_run(experiment, out, env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed after epoch {resumed_from}" in resumed.stdout
    result = json.loads(out.read_text())
    assert result["resumed_from_epoch"] == resumed_from > 0 and not out.with_name("seed0.ckpt.pt").exists()

    assert trajectory(result) == trajectory(reference)  # bit for bit: losses, accuracies, learning rates
    assert [untimed(r) for r in result["epochs"]] == [untimed(r) for r in reference["epochs"]]  # phases, MACs, drops
    keys = (
        "test_accuracy",
        "test_loss",
        "macs_total",
        "macs_forward_final_head",
        "dropped_layers_final",
        "decisions",
        "feature_store",
        "params_trainable_final",
        "drop_schedule",
    )
    assert {k: result["metrics"][k] for k in keys} == {k: reference["metrics"][k] for k in keys}
    drop_epochs = {k: v for k, v in reference["metrics"].items() if k.startswith("drop_epoch_l")}
    assert drop_epochs and {k: result["metrics"][k] for k in drop_epochs} == drop_epochs


# ---------------------------------------------------------------- stored maps: reopened or recomputed

CHAIN = {"epochs": 6, "augment": True, "forced_drops": {2: [0, 1], 4: [2]}}
# 48 samples of batch 16: 3 batches an epoch. Phases: warm-up, images (drop 0-1), extract 0->2, stored (drop 2),
# extract 2->3, stored


def checkpointed(path: str, method_options: dict):
    """A vgg11 run of CHAIN (augmented: the replay must redo the crops and flips) with a checkpoint at `path`:
    (final metrics, epoch records)."""
    torch.set_num_threads(1)
    ckpt = Checkpoint(path, "fingerprint")
    model = build("vgg11")
    torch.manual_seed(1)
    ctx = Context(torch.device("cpu"), 0, ckpt.records.append, False, ckpt)
    out = ld.train(model, DATA, cfg_for("learn_drop", **CHAIN, **method_options), ctx)
    return out, ckpt.records


@pytest.mark.slow
@pytest.mark.parametrize(
    "store,kill,resumed_from",
    [
        ("device", 16, 5),  # killed in epoch 6: both extractions replayed, on the device
        ("disk", 16, 5),  # killed in epoch 6: the killed run's disk store reopened
        ("disk", 14, 4),  # killed in the extraction epoch 5: store 0->2 reopened, the partial 2->3 one removed
        ("disk_gone", 16, 5),  # the disk store vanished (another node): both extractions replayed, into a new one
    ],
)
def test_stored_maps_come_back_reopened_or_recomputed(tmp_path, monkeypatch, store, kill, resumed_from):
    maps = tmp_path / "maps"
    maps.mkdir()
    opts = {} if store == "device" else {"feature_store_max_mb": 0, "feature_store_dir": str(maps)}
    ref_records, model = [], build("vgg11")
    torch.manual_seed(1)
    reference = ld.train(
        model, DATA, cfg_for("learn_drop", **CHAIN, **opts), Context(torch.device("cpu"), 0, ref_records.append, False)
    )

    ckpt = tmp_path / "seed0.ckpt.pt"
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_resume_learn_drop as t; "
        f"t.checkpointed({str(ckpt)!r}, {opts!r})"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, FAULT_ENV: f"kill:{kill}"},
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert torch.load(ckpt, weights_only=True)["epoch"] == resumed_from
    left = sorted(maps.iterdir())
    assert len(left) == (0 if store == "device" else 1 if kill == 16 else 2)  # a SIGKILL removes nothing
    if store == "disk_gone":
        for d in left:
            for f in d.iterdir():
                f.unlink()
            d.rmdir()

    reopened, writes = [], []
    reopen, write = FeatureStore.reopen, FeatureStore.write
    monkeypatch.setattr(FeatureStore, "reopen", lambda *a: reopened.append(reopen(*a)) or reopened[-1])
    monkeypatch.setattr(FeatureStore, "write", lambda self, *a: writes.append(len(a[0])) or write(self, *a))
    out, records = checkpointed(str(ckpt), opts)
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert [untimed(r) for r in records] == [untimed(r) for r in ref_records]
    assert untimed(out) == untimed(reference)
    if store == "disk":
        assert reopened and reopened[0] is not None
        # nothing recomputed: only the extraction epoch that the kill interrupted writes maps again
        assert sum(writes) == (0 if kill == 16 else len(DATA.y_train))
    else:
        assert not any(reopened) and sum(writes) == 2 * len(DATA.y_train)  # both extractions replayed
    assert list(maps.iterdir()) == []  # reopened, stale and recomputed stores all removed at the end
