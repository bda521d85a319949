"""`bench run`: train one experiment for one seed, write its result file atomically, log it to MLflow.

The result file `results/<profile>/runs/<experiment>/seed<k>.json` holds the config, final metrics, every
epoch, timings, peak memory, the environment (torch, device, code version) and the MLflow run id.
"""

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench import BenchError
from bench import experiments as ex
from bench.run import results as result_files
from bench.run import track
from bench.run.epoch_log import EpochLog
from bench.run.lock import seed_lock, sigterm_interrupts
from bench.run.progress import RunProgress
from bench.run.results import run_path, write_json_atomic
from bench.run.targets import support


@dataclass(frozen=True)
class RunOptions:
    """How `bench run` trains a seed (its command-line options): where the result goes, on what, with which data,
    and what an existing result or an error becomes."""

    out: Path | None = None  # the result file; None: results/<profile>/runs/<experiment>/seed<k>.json
    results: Path | str = "results"  # the results folder of the default `out`
    device: str = "auto"
    threads: int | None = None  # torch's CPU threads (None: torch's default)
    data_root: Path | str | None = None
    download: bool = False
    progress: bool | None = None  # progress bars (None: when stderr is a terminal)
    checkpoint: bool = True  # checkpoint every epoch and resume a killed run's checkpoint
    record_failure: bool = False  # an error becomes a FAILED result file (the workflow's last attempt at a job)
    force: bool = False  # train again a seed whose valid result is already there, replacing it
    gpus: int = 0  # with slots_per_gpu and gpu_slots: the GPU this job claims (bench/run/gpus.py)
    slots_per_gpu: int = 1
    gpu_slots: int = 1
    plan: str | None = None  # a `bench plan --write` file, for the ETA
    # the memory switches' rules on the memory free at the run's start (bench.cost.resources.run_memory_settings,
    # given by the command line, a later stage); None: each switch as its config sets it, auto off
    memory_rules: Callable | None = None

    def result_path(self, experiment_id: str, seed: int, profile: str) -> Path:
        return Path(self.out) if self.out else run_path(profile, experiment_id, seed, self.results)


@dataclass
class _Live:
    """The progress file and MLflow run of the training in progress, to end them when it is interrupted or fails."""

    progress: RunProgress | None = None
    logger: track.RunLogger | None = None

    def interrupted(self):
        if self.progress is not None:
            self.progress.ended("interrupted")
        if self.logger is not None:
            self.logger.finish("KILLED")


def _seed_everything(seed: int):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_path(out: Path) -> Path:
    """Where a run keeps its per-epoch checkpoint: beside its result file (seed<k>.json -> seed<k>.ckpt.pt)."""
    return out.with_name(out.stem + ".ckpt.pt")


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


def run(experiment_id: str, seed: int, profile: str, options: RunOptions = RunOptions()) -> dict:
    """Train one experiment for one seed (`train`), one process per result file at a time (`seed_lock`). A seed
    whose valid result is already there is not trained again (the result comes back with "skipped": True) unless
    `force`, which replaces it and deletes its MLflow run (tagged superseded_by the new one). SIGTERM ends the run
    as Ctrl-C does: its MLflow run is KILLED, the checkpoint stays for a resume. With `record_failure`, an error
    anywhere becomes a FAILED result file carrying the error (the workflow's last attempt at a job)."""
    out = options.result_path(experiment_id, seed, profile)
    ex.get(experiment_id)  # an unknown id is one line before anything is locked or written
    writable_result(out)
    options = replace(options, out=out)
    with seed_lock(out):
        previous = finished_result(out, experiment_id, seed, profile)
        if previous is not None and not options.force:
            return {**previous, "skipped": True}
        result = _run_interruptible(experiment_id, seed, profile, options)
        old_id = (previous or {}).get("mlflow", {}).get("run_id")
        if old_id and old_id != result["mlflow"].get("run_id"):
            track.retire(old_id, result["mlflow"].get("run_id"))
        return result


def _run_interruptible(experiment_id: str, seed: int, profile: str, options: RunOptions) -> dict:
    live = _Live()
    with sigterm_interrupts():
        try:
            return _run(experiment_id, seed, profile, options, live)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the MLflow run ends KILLED; the checkpoint stays for a resume
            live.interrupted()
            raise


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


def _run(experiment_id: str, seed: int, profile: str, options: RunOptions, live: _Live) -> dict:
    started = datetime.now(UTC)
    try:
        return train(experiment_id, seed, profile, options, live)
    except Exception as err:
        if live.progress is not None:
            live.progress.ended("failed", f"{type(err).__name__}: {err}")
        if not options.record_failure:
            raise
        result = _failed_result(experiment_id, seed, profile, started, err)
        write_json_atomic(options.out, result)
        return result


def _failed_result(experiment_id: str, seed: int, profile: str, started: datetime, err: Exception) -> dict:
    """The FAILED result file of a run that failed outside the method's training (before it, or writing it)."""
    from bench.run.measure import code_version

    try:
        cfg = ex.config(ex.get(experiment_id), profile)
    except BenchError:
        cfg = {}
    return {
        "experiment": experiment_id,
        "seed": seed,
        "profile": profile,
        "status": "FAILED",
        "config": cfg,
        "error": f"{type(err).__name__}: {err}",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "resumed_from_epoch": 0,
        "cells": [],
        "metrics": {},
        "epochs": [],
        "environment": {
            "device": "unknown (failed before training)",
            "code_version": code_version(),
            "torch": "unknown",
        },
        "mlflow": {"tracking_uri": "", "experiment": "", "run_id": None, "error": "no run: failed early"},
    }


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


@dataclass(frozen=True)
class _Job:
    """A job ready to train: its experiment, config and seed, the device, the data and the model, and when it
    started (the wall time and host memory are measured from there)."""

    exp: ex.Experiment
    seed: int
    profile: str
    cfg: dict
    dev: object  # torch.device
    data: object
    data_summary: dict
    model: object  # nn.Module
    fast: dict  # bench.methods.training.fast_settings
    started: datetime
    wall_start: float
    rss_start_mb: float


@dataclass(frozen=True)
class _Tracking:
    """Where a job's training is recorded: its cells and environment, checkpoint, MLflow run and epoch records."""

    cells: list
    env: dict
    ckpt: object  # bench.methods.checkpoint.Checkpoint, or None without checkpoints
    logger: track.RunLogger
    epochs: list  # the result file's epoch records: a resumed run's start with the killed run's


def train(experiment_id: str, seed: int, profile: str, options: RunOptions, live: _Live) -> dict:
    """Train one seed and write its result file: the config, the progress file, the data and model, the tracking,
    the method's training, the final metrics and their checks, the result. `live` gets the progress file and the
    MLflow run as soon as they exist."""
    exp = ex.get(experiment_id)
    cfg = _runnable_config(exp, profile)
    # the progress file (`bench status`) says `starting` at once; the start line follows once the data is loaded
    progress = live.progress = RunProgress(options.out, exp.id, seed, profile, options.plan)
    if options.gpus:  # before CUDA initializes: this job sees only the GPU it claimed
        from bench.run.gpus import use_one_gpu

        use_one_gpu(options.gpus, options.slots_per_gpu, options.gpu_slots)
    job = _load(exp, seed, profile, cfg, options)
    tracking = _open_tracking(job, options, live)
    # the start line (device, data, epochs to run, the plan's ETA), then one kept line per epoch with its losses,
    # accuracies and an ETA, in a terminal (above the progress bars) and in a job log alike
    progress.started(str(job.dev), job.data_summary, expected_epochs(exp.method, cfg, job.model), len(tracking.epochs))
    status, error, metrics = _train_and_measure(
        job, options, tracking, EpochLog(tracking.epochs, tracking.logger, progress)
    )
    status, error = _checked_status(metrics, status, error, tracking)
    tracking.logger.finish("FINISHED" if status == "FINISHED" else "FAILED")
    result = _result(job, tracking, status, error, metrics)
    result_files.validate(result, profile, exp.id, seed)  # what aggregate will check: a bug here, never a result
    write_json_atomic(options.out, result)
    progress.ended(status.lower(), error)
    if tracking.ckpt:
        tracking.ckpt.remove()
    return result


def _runnable_config(exp: ex.Experiment, profile: str) -> dict:
    """The experiment's config under the profile, or one line why it cannot run there."""
    ex.profile_settings(profile)
    reason = support(exp, profile)
    if reason:
        raise BenchError(f"{exp.id} cannot run: {reason}")
    return ex.config(exp, profile)


def _load(exp: ex.Experiment, seed: int, profile: str, cfg: dict, options: RunOptions) -> _Job:
    """Threads, device and seeds; then the data, and the model on the device with the config's fast settings."""
    import torch

    from bench import data as datasets
    from bench.methods.training import fast_settings, resolve_device
    from bench.models import build_model
    from bench.run import measure
    from bench.run.worker import warm_up

    if options.threads:
        torch.set_num_threads(options.threads)
    dev = resolve_device(options.device)
    free = _free_bytes(dev)  # before the job's data and model: what the job may take of its GPU
    _seed_everything(seed)
    started, wall_start = datetime.now(UTC), time.perf_counter()
    warm_up()  # what every job imports (a no-op in the warm worker): imported here, before the job's data,
    rss_start_mb = measure.host_rss_mb()  # so that this is the process `bench plan` predicts beside the job's parts
    data = datasets.load(exp.dataset, cfg, root=options.data_root, download=options.download)
    data_summary = {"dataset": exp.dataset, "source": cfg["data"]["source"], **data.summary()}
    model = build_model(
        cfg["architecture"], data.x_train.shape[1], data.num_classes, data.x_train.shape[-1], cfg["model"]
    ).to(dev)
    fast = fast_settings(cfg, dev)
    fast.update(_memory_settings(exp, profile, cfg, dev, free, fast, options.memory_rules))
    model.recompute = fast["activation_checkpointing"]
    torch.backends.cudnn.benchmark = fast.get("cudnn_benchmark", False)
    if fast["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return _Job(exp, seed, profile, cfg, dev, data, data_summary, model, fast, started, wall_start, rss_start_mb)


def _free_bytes(dev) -> tuple[float, float]:
    """(GPU, host) bytes free now (bench.methods.si.free_bytes: torch.cuda.mem_get_info and what this process's
    allocator holds unused; the host's MemAvailable); on a CPU, no GPU: (0, inf)."""
    if dev.type != "cuda":
        return 0.0, math.inf
    from bench.methods.si import free_bytes

    return free_bytes(dev)


def _memory_settings(exp: ex.Experiment, profile: str, cfg: dict, dev, free, fast: dict, rules) -> dict:
    """Whether the job recomputes its blocks' activations and keeps PredSim's optimizer states on the host, and why:
    `rules` (bench.cost.resources.run_memory_settings: the plan's rules on this GPU's memory free at the run's
    start, for the job's predicted peak; on a CPU auto is off); without them (a direct call of `run`), on and off as
    the config says and auto off. The method applies what is recorded (predsim.use_run_memory)."""
    from bench.methods.offload import offload_setting
    from bench.methods.training import check_offload_settings, checkpointing_setting, recompute_settings

    if rules is not None:
        memory = rules(exp, profile, free, dev.type != "cuda")
    else:
        setting = checkpointing_setting(cfg)
        why = "auto: no GPU" if dev.type != "cuda" else "auto: off (the run was given no memory rules)"
        memory = {
            "activation_checkpointing": setting == "on",
            "activation_checkpointing_why": f"activation_checkpointing: {setting}" if setting != "auto" else why,
        }
        if offload_setting(cfg) != "on":  # on: PredSim offloads every unit, as its config says
            memory.update(optimizer_offload=False, optimizer_offload_units=[], optimizer_offload_why="off or auto")
    out = recompute_settings(memory["activation_checkpointing"], memory["activation_checkpointing_why"], fast)
    check_offload_settings(memory, fast)
    return {**out, **{k: v for k, v in memory.items() if k.startswith("optimizer_offload")}}


def _open_tracking(job: _Job, options: RunOptions, live: _Live) -> _Tracking:
    """The environment, the checkpoint and the MLflow run: a job killed mid-run left a checkpoint, and resumes from it
    in the same MLflow run (bench/methods/checkpoint.py)."""
    from bench.methods.checkpoint import Checkpoint
    from bench.run import measure

    exp, cfg = job.exp, job.cfg
    cells = ex.cells_of(exp.id)
    writes = cfg.get("checkpoint_writes", "sync")
    env = {**measure.environment(job.dev), **job.fast, "checkpoint_writes": writes if options.checkpoint else "off"}
    tags = track.run_tags(exp, job.seed, job.profile, cells, env, job.data_summary)
    ckpt = (
        Checkpoint(checkpoint_path(options.out), ex.config_hash(cfg), background=writes == "background")
        if options.checkpoint
        else None
    )
    logger = live.logger = track.RunLogger(
        job.profile,
        exp.paper,
        f"{exp.id}/seed{job.seed}",
        tags,
        cfg,
        resume_run_id=ckpt.mlflow_run_id if ckpt else None,
        datasets=track.dataset_inputs(job.data_summary),
    )
    if ckpt:
        ckpt.mlflow_run_id = logger.run_id
        if ckpt.saved:  # said in the job's log at once, not only in the result file at the end
            print(
                f"{exp.id} seed {job.seed}: resumed from epoch {ckpt.saved['epoch']} (checkpoint {ckpt.path}, MLflow "
                f"run {logger.run_id})",
                file=sys.stderr,
                flush=True,
            )
    return _Tracking(cells, env, ckpt, logger, ckpt.records if ckpt else [])


def _train_and_measure(
    job: _Job, options: RunOptions, tracking: _Tracking, log_epoch: EpochLog
) -> tuple[str, str | None, dict]:
    """The method's training between the model's counts and the peak memory: (status, error, metrics), the metrics
    logged to MLflow as the run's final ones."""
    from bench.run import measure

    macs = measure.forward_macs(job.model, "pytorch")
    measure.reset_peak_memory(job.dev)
    params = measure.count_parameters(job.model)
    status, error, final = _train_method(job, options, tracking, log_epoch)
    metrics = {
        **final,
        **measure.peak_memory_mb(job.dev),
        "host_rss_start_mb": job.rss_start_mb,
        "params_total": params["total"],
        "params_trainable": params["trainable"],
        "macs_forward": macs,
        "flops_forward": 2 * macs,
        "wall_time_s": time.perf_counter() - job.wall_start,
    }
    resumed = tracking.ckpt.resumed_from if tracking.ckpt else 0
    if resumed:
        tracking.logger.set_tag("resumed_from_epoch", resumed)
    tracking.logger.log_final(metrics)
    metrics["flops_counting"] = "ptflops pytorch backend (modules), one sample at the input shape; FLOPs = 2 x MACs"
    return status, error, metrics


def _train_method(
    job: _Job, options: RunOptions, tracking: _Tracking, log_epoch: EpochLog
) -> tuple[str, str | None, dict]:
    """(status, error, the method's final metrics): a divergence is a result, and so is an error when this is the
    job's last attempt (`record_failure`); any other error ends the MLflow run FAILED and is raised."""
    from bench import methods
    from bench.methods.training import Context, autocast, compile_forward

    try:
        compile_forward(
            job.model, job.fast
        )  # after the MAC count (ptflops copies the model); the state dict is unchanged
        with autocast(job.dev, job.fast["precision"]):
            ctx = Context(job.dev, job.seed, log_epoch, options.progress, tracking.ckpt, job.fast)
            return "FINISHED", None, methods.get(job.exp.method).train(job.model, job.data, job.cfg, ctx)
    except methods.Diverged as div:  # a result, not a crash: the run stops and says when
        tracking.logger.set_tag("diverged", str(div))
        return "DIVERGED", str(div), {"diverged_epoch": div.epoch}
    except Exception as err:  # out of memory, a bug: recorded when this is the job's last attempt
        if not options.record_failure:
            tracking.logger.finish("FAILED")
            if tracking.ckpt:
                tracking.ckpt.wait()  # the last checkpoint on disk for the retry
            raise
        error = f"{type(err).__name__}: {err}"
        tracking.logger.set_tag("error", error)
        return "FAILED", error, {}


def _checked_status(metrics: dict, status: str, error: str | None, tracking: _Tracking) -> tuple[str, str | None]:
    """A finished run's numbers are finite and in range, or the run did not finish well: non-finite final metrics
    make it DIVERGED (metrics gets its diverged_epoch), metrics out of range FAILED."""
    if status != "FINISHED":
        return status, error
    blown = result_files.non_finite(metrics)
    if blown:  # the last evaluation overflowed: divergence found at the end (a result, like Diverged)
        error = f"diverged by the end of training: final {blown} is not finite"
        metrics["diverged_epoch"] = len(tracking.epochs)
        tracking.logger.set_tag("diverged", error)
        return "DIVERGED", error
    try:
        result_files.check_metrics(metrics)
    except result_files.Invalid as err:
        error = f"the run ended with invalid metrics: {err}"
        tracking.logger.set_tag("error", error)
        return "FAILED", error
    return status, error


def _result(job: _Job, tracking: _Tracking, status: str, error: str | None, metrics: dict) -> dict:
    return {
        "experiment": job.exp.id,
        "seed": job.seed,
        "profile": job.profile,
        "status": status,
        **({"error": error} if error else {}),
        "started": job.started.isoformat(timespec="seconds"),
        "resumed_from_epoch": tracking.ckpt.resumed_from if tracking.ckpt else 0,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "cells": [c.id for c in tracking.cells],
        "data": job.data_summary,
        "metrics": metrics,
        "epochs": tracking.epochs,
        "environment": tracking.env,
        "mlflow": tracking.logger.info(),
        "config": job.cfg,
    }


def outcome(result: dict, out: Path | None = None) -> str:
    """What `bench run` says when a run returns: skipped (already done), diverged or failed, or its accuracy and
    time."""
    m, name = result["metrics"], f"{result['experiment']} seed {result['seed']} [{result['profile']}]"
    if result.get("skipped"):
        return (
            f"{name}: already {result['status']} in {out or 'its result file'} (MLflow run "
            f"{result['mlflow']['run_id']}); --force trains it again and replaces both"
        )
    lines = (
        [f"{result['experiment']} seed {result['seed']}: resumed after epoch {result['resumed_from_epoch']}"]
        if result.get("resumed_from_epoch")
        else []
    )
    if result["status"] != "FINISHED":  # DIVERGED is a result: recorded, exit status 0
        lines.append(f"{name}: {result['status']}: {result.get('error', '')}; MLflow run {result['mlflow']['run_id']}")
    else:
        lines.append(
            f"{name}: test accuracy {m['test_accuracy']:.2f} %, train time {m['train_time_s']:.1f} s, "
            f"MLflow run {result['mlflow']['run_id']}"
        )
    return "\n".join(lines)
