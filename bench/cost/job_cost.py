"""The work of one (experiment, seed) job: what its method computes, epoch by epoch (bench/cost/method_costs.py),
over its model's parts (bench/cost/model_parts.py), summed into forward-MAC units, elements read, pair-search pairs
and dims, and batches; a Calibration (bench/cost/calibration.py) prices them in seconds."""

import dataclasses
import math

import torch

from bench import experiments as ex
from bench import methods
from bench.claims.datasets import DATASETS
from bench.cost import method_costs
from bench.cost.model_parts import model_parts
from bench.data.loader import augments


def job_cost(
    exp,
    profile: str,
    samples: tuple[int, int] | None = None,
    drops: list | None = None,
    device: torch.device | None = None,
    recompute: bool = False,
) -> dict:
    """The work of one (experiment, seed) job (bench/cost/method_costs.py), in all: forward-MAC units, forward seconds
    on `device` (its layers timed there; 0 without a device), elements read, pair-search pairs and dims, and
    batches, with what they are made of. `samples`: (training, test) samples, default the profile's; `drops`:
    Learn & Drop's or Freezing's (phase, cut) per epoch as a run did them (default: no drop); `recompute`: the run
    recomputes its blocks' activations (bench.cost.resources.recompute_choice; default not: the papers' printed times
    were not, as far as they say)."""
    cfg = ex.config(exp, profile)
    parts = model_parts(exp, cfg, device)
    info = DATASETS[exp.dataset]
    if samples is None:
        samples = (
            min(cfg["data"].get("train_samples") or info.train_size, info.train_size),
            min(cfg["data"].get("test_samples") or info.test_size, info.test_size),
        )
    train_n, test_n = samples
    phases = stopped(
        method_costs.phases(exp.method, cfg, parts, train_n, augments(cfg.get("augment")), drops, recompute),
        ex.companion_charge_epochs().get(exp.id),
    )
    work = dict.fromkeys((*method_costs.KEYS, "batches"), 0.0)
    for phase in phases:
        for k, v in phase.work(train_n, test_n, cfg["batch_size"], cfg.get("eval_batch_size", 512)).items():
            work[k] += v
    # a method whose layers drop during the run (Learn & Drop, Freezing): its phases are its epochs, one stage
    stages = [len(phases)] if methods.plan_module(exp.method).COST.drops else [p.epochs for p in phases]
    return {
        "experiment": exp.id,
        "paper": exp.paper,
        "method": exp.method,
        "macs": parts["total"],
        "epochs": sum(p.epochs for p in phases),
        "stage_epochs": stages,
        "train_samples": train_n,
        "test_samples": test_n,
        "units": work.pop("macs"),
        **work,
    }


def offload_copy_bytes(exp, profile: str, units: list[str], cost: dict) -> float:
    """The bytes PredSim's offloaded optimizer states cross between host and device in a job (bench.methods.offload,
    `units` by name, as bench.cost.resources.offload_choice decides): each unit's states copied to the device before
    each of its steps and back after it, one step a training batch in every epoch it trains (all of the run's in the
    simultaneous schedule, its own stage's in the sequential one). `cost`: the job's job_cost."""
    if not units:
        return 0.0
    from bench.cost import resources

    cfg = ex.config(exp, profile)
    per_unit = resources.predsim_units(cfg, exp.dataset)
    batches = math.ceil(cost["train_samples"] / cfg["batch_size"])
    stages = cost["stage_epochs"]
    per_state = resources.FLOAT * resources._optimizer_states(cfg)
    return sum(
        2 * (own + aux) * per_state * batches * (stages[0] if len(stages) == 1 else stages[j])
        for j, (name, own, aux) in enumerate(per_unit)
        if name in units and (len(stages) == 1 or j < len(stages))
    )


def stopped(phases: list, epochs: int | None) -> list:
    """The phases a run that stops after `epochs` epochs in all runs (a companion that diverges: its grid entry's
    `charge_epochs`); every phase when None."""
    if epochs is None:
        return phases
    out, left = [], epochs
    for phase in phases:
        if left <= 0:
            break
        out.append(dataclasses.replace(phase, epochs=min(phase.epochs, left)))
        left -= phase.epochs
    return out
