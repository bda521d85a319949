"""`bench devicecheck`: what a short window on a GPU machine must measure, in one command that keeps to a budget.

Six steps, in order; each is timed and recorded as it ends, and `summary.json` + `summary.md` under the folder the
caller names are rewritten after every step, so a check stopped by its budget (or killed) still leaves what it
measured so far:

1. environment: the device, torch, CUDA, bf16 support;
2. perf: `bench perf`'s step benchmark with every fast-step switch one at a time (the suite's step, channels_last,
   bf16, torch.compile; on CUDA also CUDA graphs) against the plain reference loop;
3. methods: one short job per method at fp32 and at bf16 (smoke's schedule; real MNIST or Fashion-MNIST where the
   method has such an experiment and the data is under --data-root, else the method's synthetic stand-in, said in
   the row): the per-epoch losses of the two precisions compared, the peak memory of each (CUDA: peak allocated);
4. switches: every GPU-time switch (`SWITCHES`: cuDNN autotuning, background checkpoint writes, ...) measured on the
   job of the method it matters to, plain against fast: the speed-up and the largest epoch-loss gap;
5. workflow: the `local` execution profile (one GPU, 2 slots per GPU; on a CPU gpus=0) on a handful of smoke jobs;
6. plan probe: the device costs `bench plan` calibrates on (rate, per element, per conv input-window element, per
   layer call, per batch, per searched pair), written to plan_calibration.json for `bench plan --calibration`.

Sizes: `gpu` on a CUDA device, `toy` elsewhere (the same steps, small: the CPU test of this command). A step
starts only when its size's expected time is left in the budget; else it is recorded `skipped: out of budget`.
The budget is kept on `Check`'s clock (time.monotonic unless another is given: the tests drive it by hand).
"""

import copy
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench import BenchError
from bench import experiments as ex

REPO = Path(__file__).resolve().parents[2]
# one job per method: MNIST / Fashion-MNIST where the papers give the method such an experiment, else the cheapest
# 10-class experiment of the method (its stand-in data)
METHOD_JOBS = {
    "backprop": "cruciata-mnist-vgg11-backprop",
    "freezing": "cruciata-mnist-vgg11-freezing",
    "learn_drop": "cruciata-mnist-vgg11-learn_drop",
    "si_forward": "karimi-fashion_mnist-lenet-si_forward",
    "fb_si": "karimi-fashion_mnist-lenet-fb_si",
    "greedy_layerwise": "karimi-fashion_mnist-lenet-greedy_layerwise",
    "predsim": "ma-cifar10-vgg8-predsim",
    "belilovsky_greedy": "karimi-cifar10-simcnn_k1-belilovsky_greedy",
    "layer_to_layer": "bhyravabhottla-cifar10-cnn12-layer_to_layer",
}
JOBS = 2 * len(METHOD_JOBS)  # the methods step: every method at fp32 and at bf16
# per step: its settings and the seconds it is expected to need at most (what the budget must hold). The `gpu` times
# are upper guesses (no GPU has run this yet): the default 540 s budget holds perf, methods, switches and the probe
# (150 + 180 + 150 + 40 = 520 s); the workflow step (120 s) needs `--budget 660` or more. The `toy` times are
# bounds above what this 2-core CPU took (perf, methods, workflow, probe: 4, 66, 33, 15 s, with 128 samples per
# job; the toy jobs now train on 64, their stand-in data too: `synthetic_samples`; switches: about 3 s a switch)
SIZES = {
    "gpu": {
        "perf": {
            "models": ["CIFAR VGG-11", "CIFAR ResNet-18", "LeNet (Fashion-MNIST)"],
            "width_mult": 1.0,
            "batches": 20,
            "rounds": 3,
            "samples": 4096,
            "compile": True,
            "expect_s": 150,
        },
        "methods": {"train_samples": 4096, "test_samples": 1024, "job_s": 10, "expect_s": 10 * JOBS},
        "workflow": {"jobs": 4, "expect_s": 120},
        "probe": {"steps": 8, "rounds": 3, "expect_s": 40},
        "switches": {"train_samples": 4096, "test_samples": 1024, "job_s": 10, "every_method": False, "expect_s": 150},
    },
    "toy": {
        "perf": {
            "models": ["LeNet (Fashion-MNIST)"],
            "width_mult": 0.25,
            "batches": 2,
            "rounds": 1,
            "samples": 128,
            "compile": False,
            "expect_s": 20,
        },
        "methods": {
            "train_samples": 64,
            "test_samples": 32,
            "synthetic_samples": (64, 32),
            "job_s": 6,
            "expect_s": 6 * JOBS,
        },
        "workflow": {"jobs": 1, "expect_s": 60},
        "probe": {"steps": 2, "rounds": 1, "expect_s": 20},
        "switches": {
            "train_samples": 64,
            "test_samples": 32,
            "synthetic_samples": (64, 32),
            "job_s": 6,
            "every_method": False,
            "expect_s": 90,
        },
    },
}
SMOKE_JOBS = [
    "karimi-fashion_mnist-lenet-backprop-sgd",
    "cruciata-mnist-vgg11-backprop",
    "karimi-fashion_mnist-lenet-si_forward",
    "cruciata-mnist-vgg11-learn_drop",
]


class Check:
    """The check's budget and record: `clock` (seconds, monotonic) times the budget, the steps and elapsed_s."""

    def __init__(self, out: Path, device: torch.device, budget_s: float, data_root: str | None, clock=time.monotonic):
        self.out, self.device, self.data_root, self.clock = Path(out), device, data_root, clock
        self.size = "gpu" if device.type == "cuda" else "toy"
        self.start, self.budget = clock(), budget_s
        self.summary = {"device": None, "size": self.size, "budget_s": budget_s, "steps": {}}

    def left(self) -> float:
        return self.budget - (self.clock() - self.start)

    def step(self, name: str, fn):
        expect = SIZES[self.size][name]["expect_s"]
        left = self.left()
        if left < expect:
            record = {"status": "skipped: out of budget", "left_s": round(left, 1), "expected_s": expect}
        else:
            t0 = self.clock()
            try:
                record = {"status": "ok", **fn(SIZES[self.size][name])}
            except Exception as err:  # a step that breaks is a finding: recorded, the next step runs
                record = {"status": f"failed: {type(err).__name__}: {str(err)[:500]}"}
            record["seconds"] = round(self.clock() - t0, 1)
        self.summary["steps"][name] = record
        self.write()

    def write(self):
        self.summary["elapsed_s"] = round(self.clock() - self.start, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1) + "\n")
        (self.out / "summary.md").write_text(markdown(self.summary))


def environment(device: torch.device) -> dict:
    from bench.run.measure import device_name

    cuda = device.type == "cuda"
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "bf16": torch.cuda.is_bf16_supported() if cuda else True,  # CPU autocast has bf16
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def perf_step(device, size: dict) -> dict:
    from bench.cost import perf

    rows = [
        perf.measure(
            name,
            device,
            size["width_mult"],
            batches=size["batches"],
            rounds=size["rounds"],
            samples=size["samples"],
            compile_=size["compile"],
        )
        for name in size["models"]
    ]
    return {
        "models": [
            {"model": r["model"], "images_per_s": r["images_per_s"], "vs_reference": r["vs_reference"]} for r in rows
        ]
    }


def _set(cfg: dict, key: str, value):
    """cfg[key] = value, `key` dotted for nested settings (method_options.pair_search_precision)."""
    *path, last = key.split(".")
    for part in path:
        cfg = cfg.setdefault(part, {})
    cfg[last] = value


def method_job(
    eid: str, precision: str, device, size: dict, data_root, overrides: dict | None = None, checkpoint=None
) -> dict:
    """One short job: smoke's schedule and model, real data where there is some, at `precision`, with the config
    `overrides` (dotted keys) and, where given, a checkpoint (bench.methods.checkpoint.Checkpoint) every epoch."""
    from bench import data as datasets
    from bench import methods
    from bench.methods.training import Context, autocast, fast_settings
    from bench.models import build_model
    from bench.run import measure

    exp = ex.get(eid)
    cfg = copy.deepcopy(ex.config(exp, "smoke"))
    cfg["precision"] = precision
    for key, value in (overrides or {}).items():
        _set(cfg, key, value)
    source = "synthetic"
    if exp.dataset in ("mnist", "fashion_mnist"):
        real = {
            **cfg,
            "data": {"source": "real", "train_samples": size["train_samples"], "test_samples": size["test_samples"]},
        }
        try:
            data = datasets.load(exp.dataset, real, root=data_root)
            cfg, source = real, "real"
        except BenchError:
            pass
    if source == "synthetic":
        if size.get("synthetic_samples"):  # toy: a stand-in smaller than smoke's as well
            train, test = size["synthetic_samples"]
            cfg["data"] = {**cfg["data"], "train_samples": train, "test_samples": test}
        data = datasets.load(exp.dataset, cfg)
    torch.manual_seed(0)
    model = build_model(
        cfg["architecture"], data.x_train.shape[1], data.num_classes, data.x_train.shape[-1], cfg["model"]
    ).to(device)
    fast = fast_settings(cfg, device)
    # the memory switches as a run resolves them, here from the config alone (on or off; auto: off, no free memory
    # measured): PredSim reads optimizer_offload from the config itself (predsim.use_run_memory)
    model.recompute = str(cfg.get("activation_checkpointing", "off")).lower() in ("on", "true")
    fast["activation_checkpointing"] = "on" if model.recompute else "off"
    if fast["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    records = []
    measure.reset_peak_memory(device)
    t0 = time.perf_counter()
    with autocast(device, fast["precision"]):
        final = methods.get(exp.method).train(model, data, cfg, Context(device, 0, records.append, False, checkpoint))
    if checkpoint is not None:
        checkpoint.wait()
    seconds = time.perf_counter() - t0
    return {
        "experiment": eid,
        "data": f"{source} {exp.dataset} ({len(data.y_train)}/{len(data.y_test)})",
        "precision": fast["precision"],
        "fast_settings": fast,
        "seconds": round(seconds, 2),
        "train_loss": [r.get("train_loss") for r in records],
        "test_accuracy": final.get("test_accuracy"),
        "peak_memory_mb": round(measure.peak_memory_mb(device)["peak_memory_mb"], 1),
    }


def methods_step(check: Check, size: dict) -> dict:
    rows = []
    for method, eid in METHOD_JOBS.items():
        if check.left() < 2 * size["job_s"]:
            rows.append({"method": method, "status": "skipped: out of budget"})
            continue
        try:
            fp32, bf16 = (method_job(eid, p, check.device, size, check.data_root) for p in ("fp32", "bf16"))
        except Exception as err:
            rows.append({"method": method, "status": f"failed: {type(err).__name__}: {str(err)[:300]}"})
            continue
        pairs = [(a, b) for a, b in zip(fp32["train_loss"], bf16["train_loss"]) if a is not None and b is not None]
        gap = max((abs(a - b) for a, b in pairs), default=None)
        rows.append(
            {
                "method": method,
                "status": "ok",
                "fp32": fp32,
                "bf16": bf16,
                "max_loss_gap": None if gap is None else round(gap, 4),
            }
        )
    return {"jobs": rows}


@dataclass(frozen=True)
class Switch:
    """A GPU-time switch (issue 30): its config key (dotted for a method option), its plain and its fast value, and
    the methods whose jobs measure it (the `toy` size runs the first only)."""

    key: str
    plain: object
    fast: object
    methods: tuple[str, ...]
    checkpoints: bool = False  # the jobs write a checkpoint every epoch (what the switch changes)
    cuda_only: bool = False  # resolved to its plain value off CUDA (fast_settings)
    toy: bool = True  # measured at the toy size too (the CPU test of the check)


# Each switch changes how, never what, is computed: the step records its speed-up and the largest gap between the
# two jobs' epoch losses (same seed, same batches), which must be float rounding only.
SWITCHES = {
    "cudnn.benchmark": Switch("cudnn_benchmark", False, True, ("backprop",), cuda_only=True),
    "background checkpoint writes": Switch("checkpoint_writes", "sync", "background", ("predsim",), True),
    "random draws once per epoch": Switch("random_draws", "per_batch", "per_epoch", ("predsim", "si_forward")),
    "whole training step compiled": Switch(
        "compile_step", False, True, ("backprop", "predsim", "greedy_layerwise", "learn_drop"), toy=False
    ),
    "activations recomputed per block": Switch("activation_checkpointing", "off", "on", ("backprop", "learn_drop")),
    "PredSim's optimizer states on the host": Switch("optimizer_offload", "off", "on", ("predsim",)),
    "pair search on tensor cores, exact re-rank": Switch(
        "method_options.pair_search_precision", "fp32", "tf32_rerank", ("si_forward", "fb_si")
    ),
}


def switch_jobs(check: Check, size: dict, name: str, switch: Switch) -> list[dict]:
    """The switch's plain and fast jobs, per method it is measured on."""
    import tempfile

    from bench.methods.checkpoint import Checkpoint

    rows = []
    for method in switch.methods if size["every_method"] else switch.methods[:1]:
        pair = []
        for value in (switch.plain, switch.fast):
            with tempfile.TemporaryDirectory(prefix="bench-switch-") as tmp:
                ckpt = (
                    Checkpoint(Path(tmp) / "job.ckpt.pt", background=value == "background")
                    if switch.checkpoints
                    else None
                )
                job = method_job(
                    METHOD_JOBS[method], "fp32", check.device, size, check.data_root, {switch.key: value}, ckpt
                )
            pair.append(job)
        plain, fast = pair
        gaps = [abs(a - b) for a, b in zip(plain["train_loss"], fast["train_loss"]) if a is not None and b is not None]
        rows.append(
            {
                "switch": name,
                "key": switch.key,
                "method": method,
                "plain_s": plain["seconds"],
                "fast_s": fast["seconds"],
                "speedup": round(plain["seconds"] / fast["seconds"], 3) if fast["seconds"] else None,
                "max_loss_gap": max(gaps, default=None),
                "resolved": {
                    "plain": plain["fast_settings"].get(switch.key, switch.plain),
                    "fast": fast["fast_settings"].get(switch.key, switch.fast),
                },
                # device: the run resolved it for its device (fast_settings); config: the method applies the
                # config's value as given (never auto here), so the row repeats what the job was given
                "resolved_from": "device" if switch.key in fast["fast_settings"] else "config",
            }
        )
    return rows


def switches_step(check: Check, size: dict) -> dict:
    """Every switch measured: its jobs with the switch off and on, while the budget holds two of them."""
    rows = []
    for name, switch in SWITCHES.items():
        rows += _switch_rows(check, size, name, switch)
    return {"switches": rows}


def _switch_rows(check: Check, size: dict, name: str, switch: Switch) -> list[dict]:
    """The switch's rows: its jobs', skipped out of budget, or failed with the one-line reason."""
    if check.size == "toy" and not switch.toy:  # torch.compile takes minutes on a CPU, even for a toy model
        return [{"switch": name, "key": switch.key, "status": "skipped: not at toy size"}]
    if check.left() < 2 * size["job_s"]:
        return [{"switch": name, "key": switch.key, "status": "skipped: out of budget"}]
    try:
        return [{**r, "status": "ok"} for r in switch_jobs(check, size, name, switch)]
    except Exception as err:  # a switch that breaks is a finding: recorded, the next one runs
        return [{"switch": name, "key": switch.key, "status": f"failed: {type(err).__name__}: {err}"[:400]}]


def workflow_step(check: Check, size: dict) -> dict:
    jobs = SMOKE_JOBS[: size["jobs"]]
    folder = check.out / "workflow"
    gpus = 1 if check.device.type == "cuda" else 0
    targets = [f"results/smoke/runs/{j}/seed0.json" for j in jobs]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--workflow-profile",
        str(REPO / "workflows/profiles/local"),
        "--config",
        "profile=smoke",
        f"gpus={gpus}",
        "slots_per_gpu=2",
        f"only={','.join(jobs)}",
        "--resources",
        f"gpu={2 * max(gpus, 1)}",
        "--cores",
        "2",
        *targets,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, int(check.left())))
    if proc.returncode:
        raise RuntimeError(f"snakemake exit {proc.returncode}: {proc.stderr[-400:]}")
    results = [json.loads((folder / t).read_text()) for t in targets]
    return {
        "jobs": [
            {
                "experiment": r["experiment"],
                "status": r["status"],
                "device": r["environment"]["device"],
                "wall_time_s": round(r["metrics"]["wall_time_s"], 1),
            }
            for r in results
        ],
        "gpus": gpus,
        "slots_per_gpu": 2,
    }


def probe_step(check: Check, size: dict) -> dict:
    from bench.cost import plan

    cal = plan.probe("paper", check.device, steps=size["steps"], rounds=size["rounds"])
    path = check.out / "plan_calibration.json"
    path.write_text(json.dumps(asdict(cal), indent=1))
    return {"forward_mac_units_per_s": cal.rate, "calibration": asdict(cal), "use": f"bench plan --calibration {path}"}


def run(out: Path, device: str = "auto", budget_s: float = 540.0, data_root: str | None = None) -> dict:
    from bench.methods.training import resolve_device

    if budget_s <= 0:
        raise BenchError(f"--budget {budget_s:g}: seconds, more than 0")
    check = Check(out, resolve_device(device), budget_s, data_root)
    check.summary["device"] = environment(check.device)
    check.summary["ran_on"] = (
        "a CUDA GPU: "
        if check.device.type == "cuda"
        else "a CPU, at toy size: this tests the check itself, it measures nothing about GPUs: "
    ) + check.summary["device"]["device"]
    check.write()
    check.step("perf", lambda size: perf_step(check.device, size))
    check.step("methods", lambda size: methods_step(check, size))
    check.step("switches", lambda size: switches_step(check, size))
    check.step("workflow", lambda size: workflow_step(check, size))
    check.step("probe", lambda size: probe_step(check, size))
    return check.summary


def markdown(summary: dict) -> str:
    from tabulate import tabulate

    lines = [
        "# Device check",
        "",
        f"Ran on {summary.get('ran_on') or '?'} (size `{summary['size']}`), budget "
        f"{summary['budget_s']:g} s, {summary.get('elapsed_s', 0):g} s used.",
        "",
    ]
    env = summary.get("device") or {}
    lines += [f"torch {env.get('torch', '?')}, CUDA {env.get('cuda') or '-'}, bf16 {env.get('bf16')}", ""]
    for name, step in summary["steps"].items():
        lines += [f"## {name}: {step['status']}" + (f" ({step['seconds']} s)" if "seconds" in step else ""), ""]
        if name == "perf" and step["status"] == "ok":
            rows = [
                [m["model"], k, f"{v:.0f}", f"{m['vs_reference'][k]:.2f}x"]
                for m in step["models"]
                for k, v in m["images_per_s"].items()
            ]
            lines += [tabulate(rows, ["model", "step", "images/s", "vs reference"], tablefmt="github"), ""]
        elif name == "methods" and step["status"] == "ok":
            lines += _methods_table(step)
        elif name == "workflow" and step["status"] == "ok":
            lines += [
                tabulate(
                    [[j["experiment"], j["status"], j["device"], j["wall_time_s"]] for j in step["jobs"]],
                    ["smoke job", "status", "device", "wall s"],
                    tablefmt="github",
                ),
                "",
            ]
        elif name == "switches" and step["status"] == "ok":
            lines += _switches_table(step["switches"])
        elif name == "probe" and step["status"] == "ok":
            costs = step["calibration"]
            lines += [
                f"{costs['rate']:.4g} forward-MAC units/s (a VGG-11 step), {costs['per_batch'] * 1e3:.3g} ms per "
                f"batch, {costs['per_read'] * 1e9:.3g} ns per element read from a cache, {costs['per_pair'] * 1e9:.3g}"
                f" ns per searched pair: `{step['use']}` (on this GPU itself, `bench plan` times every model's "
                "layers instead of using the rate)",
                "",
            ]
    return "\n".join(lines)


def _switches_table(rows: list[dict]) -> list[str]:
    from tabulate import tabulate

    table = [
        [r["switch"], f"`{r['key']}`", r.get("method", ""), r["status"]]
        + (
            [
                r["plain_s"],
                r["fast_s"],
                r["speedup"],
                r["max_loss_gap"],
                f"{r['resolved']['plain']} -> {r['resolved']['fast']}"
                + (" (config)" if r.get("resolved_from") == "config" else ""),
            ]
            if r["status"] == "ok"
            else [""] * 5
        )
        for r in rows
    ]
    head = ["switch", "config key", "method", "status", "plain s", "fast s", "speed-up", "max epoch loss gap", "as run"]
    return [
        tabulate(table, head, tablefmt="github"),
        "",
        "Each switch changes how, not what, is computed: the same job (same seed, same batches) with the switch at "
        "its plain and at its fast value; the loss gap must be float rounding only. `as run`: the value each job "
        "resolved on this device (a CUDA-only switch is off on a CPU); marked (config), the value its config gave, "
        "which the method applies as given.",
        "",
    ]


def _methods_table(step: dict) -> list[str]:
    from tabulate import tabulate

    rows = [
        [j["method"], j["status"]]
        + (
            [
                j["fp32"]["data"],
                j["fp32"]["seconds"],
                j["bf16"]["seconds"],
                j["fp32"]["train_loss"][-1],
                j["max_loss_gap"],
                j["fp32"]["peak_memory_mb"],
                j["bf16"]["peak_memory_mb"],
            ]
            if j["status"] == "ok"
            else [""] * 7
        )
        for j in step["jobs"]
    ]
    head = [
        "method",
        "status",
        "data",
        "fp32 s",
        "bf16 s",
        "last fp32 loss",
        "max epoch loss gap",
        "fp32 peak MB",
        "bf16 peak MB",
    ]
    return [
        tabulate(rows, head, tablefmt="github"),
        "",
        "The loss gap is the largest |fp32 - bf16| of an epoch's training loss (same seed, same "
        "batches). Peak memory: CUDA's peak allocated per job; on a CPU the process's peak resident "
        "set so far (it only grows).",
        "",
    ]
