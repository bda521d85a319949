"""Resume of the sequential layer-wise methods (si_forward, fb_si, greedy_layerwise, belilovsky_greedy): a job killed
in the middle of a later stage skips the stages it finished, goes on inside the stage it was in, and ends with the
per-epoch records and final metrics of an uninterrupted run (CPU, one thread, fixed seed)."""

import json

import pytest
import torch
from helpers import separable
from test_method_greedy import cfg_for, lenet, simcnn_cfg, simcnn_model
from test_resume import bench_run, kill_in_epoch, trajectory, uninterrupted

from bench.methods import belilovsky, fb_si, greedy, si, training
from bench.methods.checkpoint import Checkpoint
from bench.methods.training import FAULT_ENV, Context, InjectedFault

# smoke: the job is SIGKILLed in the first batch of epoch `resumed` + 1 (test_resume.kill_in_epoch: counted in the
# smoke profile's batches an epoch), `resumed` epochs were checkpointed by then
SMOKE = [
    # stages: SI block 0, SI block 1, classifier (feature_blocks 2), 1 epoch each: killed in the classifier stage,
    # resumed after the last epoch of block 1's stage
    pytest.param("karimi-fashion_mnist-lenet-si_forward", 2, id="si_forward"),
    # SI block 0 (1 epoch), then end to end for 2 epochs: killed in the second end-to-end epoch, resumed inside it
    pytest.param("karimi-cifar10-lenet-fb_si", 2, id="fb_si"),
    # block 0 + temporary head, block 1 + temporary head, classifier, 1 epoch each; augmented (the generator crops)
    pytest.param("karimi-cifar10-lenet-greedy_layerwise", 2, id="greedy_layerwise"),
    # 5 blocks, each with its aux head for 1 epoch: killed in block 3's stage
    pytest.param("karimi-cifar10-simcnn_k1-belilovsky_greedy", 3, id="belilovsky_greedy"),
]


@pytest.mark.slow
@pytest.mark.parametrize("experiment,resumed", SMOKE)
def test_a_killed_layerwise_job_resumes_and_matches_an_uninterrupted_run(tmp_path, smoke_runs, experiment, resumed):
    out = tmp_path / "run" / "seed0.json"
    ckpt = out.with_name("seed0.ckpt.pt")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    killed = bench_run(experiment, out, {**env, FAULT_ENV: kill_in_epoch(experiment, resumed + 1)})
    assert killed.returncode == -9 and not out.exists()  # SIGKILL
    assert ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] == resumed
    again = bench_run(experiment, out, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed after epoch {resumed}" in again.stdout
    result = json.loads(out.read_text())
    assert result["status"] == "FINISHED" and result["resumed_from_epoch"] == resumed and not ckpt.exists()
    reference = uninterrupted(smoke_runs, experiment)
    assert trajectory(result) == trajectory(reference)  # bit for bit
    assert result["metrics"]["test_accuracy"] == reference["metrics"]["test_accuracy"]
    assert len(result["epochs"]) == len(reference["epochs"])


# ---------------------------------------------------------------- in process: longer stages, LR decays


def exact(record: dict) -> dict:
    """Everything but the times (which are the epochs' own)."""
    return {k: v for k, v in record.items() if not k.endswith("_s")}


def train_once(method, make_model, cfg, path=None, fault=None, monkeypatch=None):
    torch.manual_seed(0)  # as the runner does before building the model
    model = make_model()
    ckpt = Checkpoint(path, "test") if path else None
    records = ckpt.records if ckpt else []
    if fault:
        monkeypatch.setenv(FAULT_ENV, fault)
        monkeypatch.setattr(training, "_batches_seen", 0)
    else:
        monkeypatch.delenv(FAULT_ENV, raising=False)
    out = method.train(
        model, separable(n_train=32, n_test=16), cfg, Context(torch.device("cpu"), 3, records.append, False, ckpt)
    )
    return out, records, model, ckpt


def si_cfg(**kw):
    return cfg_for(
        epochs=3,
        epochs_per_layer=2,
        classifier_epochs=2,
        si_eval_samples=16,
        loss_reduction="mean",
        normalize_features=True,
        **kw,
    )


def si_epoch_search_scaled_cfg():
    cfg = si_cfg(neighbours="data_epoch", layer_lr_schedule="scaled")
    cfg["lr_milestones"] = [2]  # of 3 epochs: round(2 * 2 / 3) = 1, every 2-epoch stage decays at its second epoch
    return cfg


def fb_cfg():
    cfg = cfg_for(
        epochs=3, epochs_per_layer=2, si_layers=2, si_eval_samples=16, loss_reduction="mean", normalize_features=True
    )
    cfg["lr_milestones"] = [1, 2]
    return cfg


def belilovsky_cfg():
    cfg = simcnn_cfg("simcnn_k1", epochs_per_layer=3)
    cfg["lr_milestones"] = [1]  # a fresh optimizer at the start of every stage's second epoch
    return cfg


# 16-sample batches: 2 a epoch
IN_PROCESS = [
    # in block 1's second epoch; killed at the end of a stage (before the next one's first batch)
    pytest.param(si, lenet, si_cfg(), 7, 3, id="si_forward-mid-stage"),
    pytest.param(si, lenet, si_cfg(), 8, 4, id="si_forward-stage-end"),
    pytest.param(si, lenet, si_cfg(augment=True, cache_prefix=False), 11, 5, id="si_forward-augmented"),
    # partners searched every epoch, the LR decayed at every stage's second epoch: killed in block 1's second epoch
    # (its LR decayed, its partners searched on the model the killed run had then: searched again on resume), and in
    # the classifier stage's second epoch (its LR decayed)
    pytest.param(si, lenet, si_epoch_search_scaled_cfg(), 7, 3, id="si_forward-data_epoch-scaled"),
    pytest.param(si, lenet, si_epoch_search_scaled_cfg(), 19, 9, id="si_forward-data_epoch-scaled-classifier"),
    # in the end-to-end stage's second epoch (the LR decayed in place at its start)
    pytest.param(fb_si, lenet, fb_cfg(), 11, 5, id="fb_si"),
    # the temporary head of block 2, in its second epoch
    pytest.param(
        greedy,
        lenet,
        cfg_for(epochs_per_layer=2, classifier_epochs=2, si_eval_samples=16),
        11,
        5,
        id="greedy_layerwise",
    ),
    # block 1's third epoch: the optimizer made at the LR decay is restored, momentum included
    pytest.param(belilovsky, lambda: simcnn_model("simcnn_k1"), belilovsky_cfg(), 11, 5, id="belilovsky_greedy"),
]


@pytest.mark.parametrize("method,make_model,cfg,kill,resumed", IN_PROCESS)
def test_resume_inside_a_stage_matches_an_uninterrupted_run(
    tmp_path, monkeypatch, method, make_model, cfg, kill, resumed
):
    ref_out, ref_records, ref_model, _ = train_once(method, make_model, cfg, monkeypatch=monkeypatch)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(InjectedFault):
        train_once(method, make_model, cfg, path, f"raise:{kill}", monkeypatch)
    assert torch.load(path, weights_only=True)["epoch"] == resumed
    out, records, model, ckpt = train_once(method, make_model, cfg, path, monkeypatch=monkeypatch)
    assert ckpt.resumed_from == resumed
    assert [exact(r) for r in records] == [exact(r) for r in ref_records]
    assert exact(out) == exact(ref_out)
    for (k, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in ref_model.parameters()]
