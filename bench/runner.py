"""`bench run`: train one experiment for one seed, write its result file atomically, log it to MLflow.

The result file `results/<profile>/runs/<experiment>/seed<k>.json` holds the config, final metrics, every
epoch, timings, peak memory, the environment (torch, device, code version) and the MLflow run id.
"""
import json
import os
import random
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import BenchError
from bench import experiments as ex
from bench.registry import load_claims


def run_path(profile: str, experiment_id: str, seed: int, results: Path | str = "results") -> Path:
    return Path(results) / profile / "runs" / experiment_id / f"seed{seed}.json"


def write_json_atomic(path: Path, data: dict):
    """Write to a temporary file in the same folder, then rename: a killed job never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cells_of(experiment_id: str) -> list:
    """The claims measured on this experiment, directly or as the baseline of a relative cell."""
    out = []
    for c in load_claims():
        keys = [k for k in (c.experiment_key(), c.baseline_key()) if k]
        if any(ex.Experiment(*k).id == experiment_id for k in keys):
            out.append(c)
    return out


def _seed_everything(seed: int):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_path(out: Path) -> Path:
    """Where a run keeps its per-epoch checkpoint: beside its result file (seed<k>.json -> seed<k>.ckpt.pt)."""
    return out.with_name(out.stem + ".ckpt.pt")


def run(experiment_id: str, seed: int, profile: str, *, out: Path | None = None, record_failure: bool = False,
        **kw) -> dict:
    """Train one experiment for one seed (`train`); with `record_failure`, an error anywhere becomes a FAILED
    result file carrying the error (the workflow's last attempt at a job), instead of an exception."""
    out = Path(out) if out else run_path(profile, experiment_id, seed, kw.get("results", "results"))
    started = datetime.now(timezone.utc)
    try:
        return train(experiment_id, seed, profile, out=out, record_failure=record_failure, **kw)
    except Exception as err:
        if not record_failure:
            raise
        from bench.measure import code_version

        result = {"experiment": experiment_id, "seed": seed, "profile": profile, "status": "FAILED",
                  "error": f"{type(err).__name__}: {err}", "started": started.isoformat(timespec="seconds"),
                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "resumed_from_epoch": 0,
                  "cells": [], "metrics": {}, "epochs": [],
                  "environment": {"device": "unknown (failed before training)", "code_version": code_version(),
                                  "torch": "unknown"},
                  "mlflow": {"tracking_uri": "", "experiment": "", "run_id": None, "error": "no run: failed early"}}
        write_json_atomic(out, result)
        return result


def train(experiment_id: str, seed: int, profile: str, *, out: Path, device: str = "auto",
          threads: int | None = None, data_root=None, download: bool = False, progress: bool | None = None,
          results: Path | str = "results", checkpoint: bool = True, record_failure: bool = False, gpus: int = 0,
          slots_per_gpu: int = 1, gpu_slots: int = 1) -> dict:
    exp = ex.get(experiment_id)
    ex.profile_settings(profile)
    reason = ex.support(exp, profile)
    if reason:
        raise BenchError(f"{experiment_id} cannot run: {reason}")
    cfg = ex.config(exp, profile)
    if gpus:  # before CUDA initializes: this job sees only the GPU it claimed
        from bench.gpus import use_one_gpu

        use_one_gpu(gpus, slots_per_gpu, gpu_slots)

    import torch

    from bench import data as datasets
    from bench import measure, methods, track
    from bench.checkpoint import Checkpoint
    from bench.models import build_model
    from bench.training import Context, autocast, compile_forward, fast_settings, resolve_device

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    _seed_everything(seed)
    started = datetime.now(timezone.utc)
    wall_start = time.perf_counter()
    data = datasets.load(exp.dataset, cfg, root=data_root, download=download)
    model = build_model(cfg["architecture"], data.x_train.shape[1], data.num_classes, data.x_train.shape[-1],
                        cfg["model"]).to(dev)
    fast = fast_settings(cfg, dev)
    if fast["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    cells = cells_of(experiment_id)
    env = {**measure.environment(dev), **fast}
    tags = {"paper": exp.paper, "tables": ",".join(sorted({c.table for c in cells})),
            "cells": ",".join(c.id for c in cells), "experiment": exp.id, "seed": seed, "profile": profile,
            "code_version": env["code_version"], "dataset": exp.dataset, "model": exp.model, "method": exp.method,
            "variant": exp.variant, "device": env["device"], "precision": fast["precision"],
            "channels_last": fast["channels_last"], "compile": fast["compile"], "cuda_graphs": fast["cuda_graphs"]}
    # a job killed mid-run left a checkpoint: resume from it, in the same MLflow run (bench/checkpoint.py)
    ckpt = Checkpoint(checkpoint_path(out), ex.config_hash(cfg)) if checkpoint else None
    logger = track.RunLogger(profile, exp.paper, f"{exp.id}/seed{seed}", tags, cfg,
                             resume_run_id=ckpt.mlflow_run_id if ckpt else None)
    if ckpt:
        ckpt.mlflow_run_id = logger.run_id
    epochs = ckpt.records if ckpt else []

    def log_epoch(record: dict):
        epochs.append(record)
        logger.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    macs = measure.forward_macs(model, "pytorch")
    measure.reset_peak_memory(dev)
    params = measure.count_parameters(model)
    status, error = "FINISHED", None
    try:
        compile_forward(model, fast)  # after the MAC count (ptflops copies the model); the state dict is unchanged
        with autocast(dev, fast["precision"]):
            final = methods.get(exp.method).train(model, data, cfg, Context(dev, seed, log_epoch, progress, ckpt))
    except methods.Diverged as div:  # a result, not a crash: the run stops and says when
        status, error, final = "DIVERGED", str(div), {"diverged_epoch": div.epoch}
        logger.set_tag("diverged", str(div))
    except Exception as err:  # out of memory, a bug: recorded when this is the job's last attempt
        if not record_failure:
            logger.finish("FAILED")
            raise
        status, error, final = "FAILED", f"{type(err).__name__}: {err}", {}
        logger.set_tag("error", error)
    metrics = {**final, **measure.peak_memory_mb(dev), "params_total": params["total"],
               "params_trainable": params["trainable"], "macs_forward": macs, "flops_forward": 2 * macs,
               "wall_time_s": time.perf_counter() - wall_start}
    resumed = ckpt.resumed_from if ckpt else 0
    if resumed:
        logger.set_tag("resumed_from_epoch", resumed)
    logger.log_metrics({f"final_{k}": v for k, v in metrics.items()})
    metrics["flops_counting"] = "ptflops pytorch backend (modules), one sample at the input shape; FLOPs = 2 x MACs"
    logger.finish("FINISHED" if status == "FINISHED" else "FAILED")
    result = {"experiment": exp.id, "seed": seed, "profile": profile, "status": status,
              **({"error": error} if error else {}),
              "started": started.isoformat(timespec="seconds"), "resumed_from_epoch": resumed,
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cells": [c.id for c in cells], "metrics": metrics, "epochs": epochs,
              "environment": env, "mlflow": logger.info(), "config": cfg}
    write_json_atomic(out, result)
    if ckpt:
        ckpt.remove()
    return result
