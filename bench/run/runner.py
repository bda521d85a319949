"""`bench run`: train one experiment for one seed, write its result file atomically, log it to MLflow.

The result file `results/<profile>/runs/<experiment>/seed<k>.json` holds the config, final metrics, every
epoch, timings, peak memory, the environment (torch, device, code version) and the MLflow run id.
"""
import fcntl
import os
import random
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from bench import BenchError
from bench import experiments as ex
from bench.claims.registry import load_claims
from bench.run import results as result_files
from bench.run import track
from bench.run.results import run_path, write_json_atomic
from bench.run.targets import support


EPOCH_KEYS = ("epoch", "timestamp_ms")  # an epoch record's keys that are not metrics (its MLflow step and time)


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


@contextmanager
def seed_lock(out: Path):
    """Hold an exclusive, non-blocking flock on `.<result name>.lock` beside the result file for the run's life
    (the kernel frees it when the process dies, SIGKILL included); a second run of the same file is refused with
    who holds it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    f = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise BenchError(f"{out}: already being trained by {holder}; wait for it to end or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
        f.flush()
        yield
    finally:
        f.close()


_LIVE = {}  # the MLflow run of the training in progress in this process, to end it KILLED on an interrupt


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def finished_result(out: Path, experiment_id: str, seed: int, profile: str) -> dict | None:
    """The valid FINISHED or DIVERGED result already at `out` for this config, else None (a FAILED, invalid or
    stale file is trained again)."""
    if not out.exists():
        return None
    try:
        done = result_files.load(out, profile, experiment_id, seed, ex.config(ex.get(experiment_id), profile))
    except result_files.Invalid:
        return None
    return done if done["status"] in ("FINISHED", "DIVERGED") else None


def run(experiment_id: str, seed: int, profile: str, *, out: Path | None = None, record_failure: bool = False,
        force: bool = False, **kw) -> dict:
    """Train one experiment for one seed (`train`), one process per result file at a time (`seed_lock`). A seed
    whose valid result is already there is not trained again (the result comes back with "skipped": True) unless
    `force`, which replaces it and deletes its MLflow run (tagged superseded_by the new one). SIGTERM ends the run
    as Ctrl-C does: its MLflow run is KILLED, the checkpoint stays for a resume. With `record_failure`, an error
    anywhere becomes a FAILED result file carrying the error (the workflow's last attempt at a job)."""
    out = Path(out) if out else run_path(profile, experiment_id, seed, kw.get("results", "results"))
    ex.get(experiment_id)  # an unknown id is one line before anything is locked or written
    writable_result(out)
    with seed_lock(out):
        previous = finished_result(out, experiment_id, seed, profile)
        if previous is not None and not force:
            return {**previous, "skipped": True}
        main_thread = threading.current_thread() is threading.main_thread()
        old_handler = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None
        try:
            result = _run(experiment_id, seed, profile, out, record_failure, **kw)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the MLflow run ends KILLED; the checkpoint stays for a resume
            if _LIVE.get("progress") is not None:
                _LIVE["progress"].ended("interrupted")
            if _LIVE.get("logger") is not None:
                _LIVE["logger"].finish("KILLED")
            raise
        finally:
            _LIVE.clear()
            if main_thread:
                signal.signal(signal.SIGTERM, old_handler)
        old_id = (previous or {}).get("mlflow", {}).get("run_id")
        if old_id and old_id != result["mlflow"].get("run_id"):
            track.retire(old_id, result["mlflow"].get("run_id"))
        return result


def writable_result(out: Path):
    """One line (BenchError) before any training when the result file cannot be written: `out` is a folder, or its
    folder cannot be created or written (read-only file system, permissions, immutable)."""
    import errno
    import os

    if out.is_dir():
        raise BenchError(f"{out}: is a folder; the result file is a .json path (for example {out / 'seed0.json'})")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BenchError(f"{out.parent}: cannot create the result file's folder ({err.strerror or err})") from None
    if not os.access(out.parent, os.W_OK):
        raise BenchError(f"{out.parent}: cannot write the result file there ({os.strerror(errno.EACCES)})")


def _run(experiment_id: str, seed: int, profile: str, out: Path, record_failure: bool, **kw) -> dict:
    started = datetime.now(timezone.utc)
    try:
        return train(experiment_id, seed, profile, out=out, record_failure=record_failure, **kw)
    except Exception as err:
        if _LIVE.get("progress") is not None:
            _LIVE["progress"].ended("failed", f"{type(err).__name__}: {err}")
        if not record_failure:
            raise
        from bench.run.measure import code_version

        try:
            cfg = ex.config(ex.get(experiment_id), profile)
        except BenchError:
            cfg = {}
        result = {"experiment": experiment_id, "seed": seed, "profile": profile, "status": "FAILED", "config": cfg,
                  "error": f"{type(err).__name__}: {err}", "started": started.isoformat(timespec="seconds"),
                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "resumed_from_epoch": 0,
                  "cells": [], "metrics": {}, "epochs": [],
                  "environment": {"device": "unknown (failed before training)", "code_version": code_version(),
                                  "torch": "unknown"},
                  "mlflow": {"tracking_uri": "", "experiment": "", "run_id": None, "error": "no run: failed early"}}
        write_json_atomic(out, result)
        return result


def expected_epochs(method: str, cfg: dict, model) -> int | None:
    """The epochs a run will log (its stages' epochs, bench.methods.schedule.stage_epochs), or None where that cannot
    tell."""
    from bench.methods.schedule import stage_epochs

    try:
        units = None
        if method == "predsim" and (cfg.get("method_options") or {}).get("schedule") == "sequential":
            from bench.methods.predsim import unit_count

            units = unit_count(model)
        return sum(stage_epochs(method, cfg, len(getattr(model, "blocks", [])) or 1, n_units=units))
    except (ValueError, KeyError, TypeError):
        return None


def train(experiment_id: str, seed: int, profile: str, *, out: Path, device: str = "auto",
          threads: int | None = None, data_root=None, download: bool = False, progress: bool | None = None,
          results: Path | str = "results", checkpoint: bool = True, record_failure: bool = False, gpus: int = 0,
          slots_per_gpu: int = 1, gpu_slots: int = 1, plan: str | None = None) -> dict:
    exp = ex.get(experiment_id)
    ex.profile_settings(profile)
    reason = support(exp, profile)
    if reason:
        raise BenchError(f"{experiment_id} cannot run: {reason}")
    cfg = ex.config(exp, profile)
    from bench.run.progress import RunProgress

    # the progress file (`bench status`) says `starting` at once; the start line follows once the data is loaded
    progress_file = _LIVE["progress"] = RunProgress(out, exp.id, seed, profile, plan)
    if gpus:  # before CUDA initializes: this job sees only the GPU it claimed
        from bench.run.gpus import use_one_gpu

        use_one_gpu(gpus, slots_per_gpu, gpu_slots)

    import torch

    from bench import data as datasets
    from bench import methods
    from bench.methods.checkpoint import Checkpoint
    from bench.methods.training import Context, autocast, compile_forward, fast_settings, resolve_device
    from bench.models import build_model
    from bench.run import measure

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    _seed_everything(seed)
    started = datetime.now(timezone.utc)
    wall_start = time.perf_counter()
    from bench.run.worker import warm_up

    warm_up()  # what every job imports (a no-op in the warm worker): imported here, before the job's data,
    rss_start_mb = measure.host_rss_mb()  # so that this is the process `bench plan` predicts beside the job's parts
    data = datasets.load(exp.dataset, cfg, root=data_root, download=download)
    data_summary = {"dataset": exp.dataset, "source": cfg["data"]["source"], **data.summary()}
    model = build_model(cfg["architecture"], data.x_train.shape[1], data.num_classes, data.x_train.shape[-1],
                        cfg["model"]).to(dev)
    fast = fast_settings(cfg, dev)
    torch.backends.cudnn.benchmark = fast.get("cudnn_benchmark", False)
    if fast["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    cells = cells_of(experiment_id)
    writes = cfg.get("checkpoint_writes", "sync")
    env = {**measure.environment(dev), **fast, "checkpoint_writes": writes if checkpoint else "off"}
    tags = track.run_tags(exp, seed, profile, cells, env, data_summary)
    # a job killed mid-run left a checkpoint: resume from it, in the same MLflow run (bench/methods/checkpoint.py)
    ckpt = Checkpoint(checkpoint_path(out), ex.config_hash(cfg), background=writes == "background") \
        if checkpoint else None
    logger = track.RunLogger(profile, exp.paper, f"{exp.id}/seed{seed}", tags, cfg,
                             resume_run_id=ckpt.mlflow_run_id if ckpt else None,
                             datasets=track.dataset_inputs(data_summary))
    _LIVE["logger"] = logger
    if ckpt:
        ckpt.mlflow_run_id = logger.run_id
        if ckpt.saved:  # said in the job's log at once, not only in the result file at the end
            print(f"{exp.id} seed {seed}: resumed from epoch {ckpt.saved['epoch']} (checkpoint {ckpt.path}, MLflow "
                  f"run {logger.run_id})", file=sys.stderr, flush=True)
    epochs = ckpt.records if ckpt else []
    # the start line (device, data, epochs to run, the plan's ETA), then one kept line per epoch with its losses,
    # accuracies and an ETA, in a terminal (above the progress bars) and in a job log alike
    progress_file.started(str(dev), data_summary, expected_epochs(exp.method, cfg, model), len(epochs))

    def log_epoch(record: dict):  # the record keeps the time its metrics were logged with, for `bench sync`
        record["timestamp_ms"] = track.now_ms()
        epochs.append(record)
        logger.log_metrics({k: v for k, v in record.items() if k not in EPOCH_KEYS}, step=record["epoch"],
                           timestamp_ms=record["timestamp_ms"])
        progress_file.say(progress_file.epoch_line(record))

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
            if ckpt:
                ckpt.wait()  # the last checkpoint on disk for the retry
            raise
        status, error, final = "FAILED", f"{type(err).__name__}: {err}", {}
        logger.set_tag("error", error)
    metrics = {**final, **measure.peak_memory_mb(dev), "host_rss_start_mb": rss_start_mb, "params_total": params["total"],
               "params_trainable": params["trainable"], "macs_forward": macs, "flops_forward": 2 * macs,
               "wall_time_s": time.perf_counter() - wall_start}
    resumed = ckpt.resumed_from if ckpt else 0
    if resumed:
        logger.set_tag("resumed_from_epoch", resumed)
    logger.log_final(metrics)
    metrics["flops_counting"] = "ptflops pytorch backend (modules), one sample at the input shape; FLOPs = 2 x MACs"
    if status == "FINISHED":  # a finished run's numbers are finite and in range, or the run did not finish well
        blown = result_files.non_finite(metrics)
        if blown:  # the last evaluation overflowed: divergence found at the end (a result, like Diverged)
            status, error = "DIVERGED", f"diverged by the end of training: final {blown} is not finite"
            metrics["diverged_epoch"] = len(epochs)
            logger.set_tag("diverged", error)
        else:
            try:
                result_files.check_metrics(metrics)
            except result_files.Invalid as err:
                status, error = "FAILED", f"the run ended with invalid metrics: {err}"
                logger.set_tag("error", error)
    logger.finish("FINISHED" if status == "FINISHED" else "FAILED")
    result = {"experiment": exp.id, "seed": seed, "profile": profile, "status": status,
              **({"error": error} if error else {}),
              "started": started.isoformat(timespec="seconds"), "resumed_from_epoch": resumed,
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cells": [c.id for c in cells], "data": data_summary, "metrics": metrics, "epochs": epochs,
              "environment": env, "mlflow": logger.info(), "config": cfg}
    result_files.validate(result, profile, exp.id, seed)  # what aggregate will check: a bug here, never a result
    write_json_atomic(out, result)
    progress_file.ended(status.lower(), error)
    if ckpt:
        ckpt.remove()
    return result


def outcome(result: dict, out: Path | None = None) -> str:
    """What `bench run` says when a run returns: skipped (already done), diverged or failed, or its accuracy and time."""
    m, name = result["metrics"], f"{result['experiment']} seed {result['seed']} [{result['profile']}]"
    if result.get("skipped"):
        return (f"{name}: already {result['status']} in {out or 'its result file'} (MLflow run "
                f"{result['mlflow']['run_id']}); --force trains it again and replaces both")
    lines = [f"{result['experiment']} seed {result['seed']}: resumed after epoch {result['resumed_from_epoch']}"] \
        if result.get("resumed_from_epoch") else []
    if result["status"] != "FINISHED":  # DIVERGED is a result: recorded, exit status 0
        lines.append(f"{name}: {result['status']}: {result.get('error', '')}; MLflow run {result['mlflow']['run_id']}")
    else:
        lines.append(f"{name}: test accuracy {m['test_accuracy']:.2f} %, train time {m['train_time_s']:.1f} s, "
                     f"MLflow run {result['mlflow']['run_id']}")
    return "\n".join(lines)
