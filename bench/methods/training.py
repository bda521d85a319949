"""What every training method shares: optimizers and LR schedules from the config, evaluation, the epoch
record, and a progress bar that is quiet when stderr is not a terminal."""

import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm import tqdm

if TYPE_CHECKING:
    from bench.methods.checkpoint import Checkpoint


# Fault injection for the tests of resume, failure records and tracking outages: "kill:N" SIGKILLs the process,
# "raise:N" raises, after N training batches in total; "slow:MS" sleeps MS milliseconds after every batch;
# "hold:DIR" holds the run before each epoch k >= 2 until the file DIR/epoch<k> exists, saying it waits there (_held).
FAULT_ENV = "BENCH_FAULT"
_batches_seen = 0


class InjectedFault(RuntimeError):
    pass


def _faulty(batches):
    """$BENCH_FAULT=kill:N (SIGKILL) or raise:N (an exception) after N batches; slow:MS sleeps MS milliseconds after
    every batch (a long job without the CPU it would take, for the tests of what happens while jobs run)."""
    global _batches_seen
    mode, _, after = os.environ[FAULT_ENV].partition(":")
    if mode == "slow":
        for item in batches:
            yield item
            time.sleep(int(after or 0) / 1000)
        return
    for item in batches:
        if _batches_seen >= int(after or 0):
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"fault injected by ${FAULT_ENV} after {_batches_seen} batches")
        _batches_seen += 1
        yield item


_epochs_started = 0


def _held(epochs, folder: str):
    """$BENCH_FAULT=hold:DIR: before the k-th epoch this process trains (k >= 2; the epoch bars' items, every stage's
    counted, so epoch k of a run from scratch), the run creates DIR/waiting-epoch<k>.<host>.<pid> (it is there, its
    epoch k-1 trained, logged and checkpointed) and waits until the file DIR/epoch<k> exists. A test holds jobs
    between epochs this way and releases them when it has done what must happen meanwhile: no timing decides
    what it sees. Batches are not touched (the epochs' times include no wait)."""
    global _epochs_started
    import socket

    for item in epochs:
        _epochs_started += 1
        k = _epochs_started
        if k >= 2:
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, f"waiting-epoch{k}.{socket.gethostname()}.{os.getpid()}"), "w").close()
            gate = os.path.join(folder, f"epoch{k}")
            while not os.path.exists(gate):
                time.sleep(0.05)  # polls the gate file; a signal (SIGTERM) still interrupts the run here
        yield item


@dataclass
class Context:
    """What a method needs besides model, data and config."""

    device: torch.device
    seed: int
    log_epoch: Callable[[dict], None] = lambda record: None
    progress: bool | None = None  # None: only when stderr is a terminal
    checkpoint: "Checkpoint | None" = None  # per-epoch checkpoints (bench/methods/checkpoint.py); None: no resume
    # the run's resolved settings as its result file records them (bench.run.runner: fast_settings and the memory
    # switches); a method reads the one it acts on (predsim: optimizer_offload); empty outside a run
    settings: dict = field(default_factory=dict)

    def saved(self) -> dict | None:
        """A killed run's saved values and epochs done ({"epoch": k, ...}), or None: read before building objects
        that depend on where the run stopped."""
        return self.checkpoint.peek() if self.checkpoint else None

    def resume(self, objects: dict, values: dict) -> int:
        """Restore a killed run's last checkpoint into `objects` and `values`; the epochs already done (0: none)."""
        return self.checkpoint.restore(objects, values) if self.checkpoint else 0

    def epoch_done(self, epoch: int, objects: dict, values: dict):
        """Checkpoint after `epoch` epochs (call it after the epoch's record is logged)."""
        if self.checkpoint:
            self.checkpoint.save(epoch, objects, values)

    def bar(self, iterable, **kw):
        show = sys.stderr.isatty() if self.progress is None else self.progress
        bar = tqdm(iterable, disable=not show, leave=False, dynamic_ncols=True, **kw)
        fault = os.environ.get(FAULT_ENV, "")
        if fault.startswith("hold:"):  # epochs held on files (_held); batches untouched
            return _held(bar, fault[len("hold:") :]) if kw.get("unit") == "epoch" else bar
        return _faulty(bar) if kw.get("unit") == "batch" and fault else bar


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when available, else the CPU), 'cpu', 'cuda' or 'cuda:N'; CUDA asked for but absent is an error."""
    from bench import BenchError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device '{name}' requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BenchError(f"--device '{name}' is not a device: use auto, cpu, cuda or cuda:N") from None


def timed_steps(
    step: Callable, batches, device: torch.device, limit: int, channels_last: bool = False, precision: str = "fp32"
) -> tuple[int, float]:
    """Run `step(x, y)` on `limit` batches (iterating `batches` again when an epoch ends) under the precision's
    autocast; returns (images, seconds). The benchmarks' and the cost probe's one loop."""
    images = steps = 0
    sync(device)
    start = time.perf_counter()
    with autocast(device, precision):
        while steps < limit:
            for x, y in batches:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                step(x, y)
                images, steps = images + len(y), steps + 1
                if steps == limit:
                    break
    sync(device)
    return images, time.perf_counter() - start


def ce_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
    """One plain cross-entropy training step on a batch: step(x, y) -> (loss, logits), both detached. The backward
    runs in a function of its own so that no tensor of its graph outlives it (what `compiled_step` needs)."""

    def backward(x, y):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        return loss.detach(), logits.detach()

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        out = backward(x, y)
        optimizer.step()
        return out

    return step


def fast_settings(cfg: dict, device: torch.device) -> dict:
    """The fast-step switches a run uses, resolved for its device (recorded in its result and MLflow run):
    precision 'bf16' (autocast around the whole training: forward, loss and the backward that follows, on GPUs
    with bf16; no loss scaling is needed, bf16 has fp32's range) or 'fp32'; channels_last on CUDA; torch.compile of
    the model's forward (off unless asked: it pays off only for long runs of methods that call the whole model,
    backprop above all); torch.compile of the whole training step (`compile_step`, off unless asked:
    `compiled_step`); CUDA graphs (off unless asked; CUDA only); cuDNN's autotuner (`torch.backends.cudnn.
    benchmark`: each convolution's fastest algorithm, timed on the first batches; CUDA only, the GPU profiles turn it
    on). Config keys `precision` (auto | fp32 | bf16), `channels_last` (auto | true | false), `compile` (false |
    true), `compile_step` (false | true), `cuda_graphs` (false | true), `cudnn_benchmark` (false | true),
    `random_draws` (per_batch | per_epoch: when the training batches draw their shuffle and augmentation,
    bench.data.loader.Batches). Activation recomputation
    (`activation_checkpointing`) depends on the job's predicted memory, not only the device: `recompute_settings`."""
    from bench import BenchError

    cuda = device.type == "cuda"
    precision = cfg.get("precision", "auto")
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = cfg.get("channels_last", "auto")
    channels_last = cuda if channels_last == "auto" else bool(channels_last)
    cuda_graphs = bool(cfg.get("cuda_graphs", False))
    if cuda_graphs and not cuda:
        raise BenchError(f"cuda_graphs: true needs a CUDA device, this run is on '{device}' (set cuda_graphs: false)")
    return {
        "precision": precision,
        "channels_last": channels_last,
        "compile": bool(cfg.get("compile", False)),
        "compile_step": bool(cfg.get("compile_step", False)),
        "cuda_graphs": cuda_graphs,
        "cudnn_benchmark": cuda and bool(cfg.get("cudnn_benchmark", False)),
        "random_draws": cfg.get("random_draws", "per_batch"),
    }


# YAML reads a bare on/off as a boolean: both spellings are the same setting
_CHECKPOINTING = {"auto": "auto", "on": "on", "off": "off", "true": "on", "false": "off"}


def checkpointing_setting(cfg: dict) -> str:
    """Config key `activation_checkpointing`: auto | on | off (default off: the GPU profiles set auto). Whether a run
    recomputes its blocks' activations (bench.models.recompute) is decided from it by
    bench.cost.resources.recompute_rule, for the plan and the run alike."""
    from bench import BenchError

    value = cfg.get("activation_checkpointing", "off")
    setting = _CHECKPOINTING.get(str(value).lower())
    if setting is None:
        raise BenchError(f"activation_checkpointing must be auto, on or off, got {value!r}")
    return setting


def recompute_settings(on: bool, why: str, fast: dict) -> dict:
    """The run's recomputation switch as its result file and MLflow tags record it (beside `fast_settings`'); a
    compiled forward cannot take it (torch.compile accepts only dispatch-mode contexts in a checkpoint, and the BN
    guard of bench.models.recompute is a plain one)."""
    from bench import BenchError

    if on and (fast.get("compile") or fast.get("compile_step") or fast.get("cuda_graphs")):
        raise BenchError(
            f"activation recomputation ({why}) cannot run with compile, compile_step or cuda_graphs: turn those off, "
            "or set activation_checkpointing: off where the job fits without it"
        )
    return {"activation_checkpointing": on, "activation_checkpointing_why": why}


def check_offload_settings(memory: dict, fast: dict):
    """PredSim's optimizer offload (bench.methods.offload) is refused with the compiled step or CUDA graphs: its
    states move between the host and the device around each unit's step, which a compiled optimizer step and a
    recorded graph take as fixed inputs, and no GPU has run the two together yet (bench devicecheck measures each
    alone)."""
    from bench import BenchError

    if memory.get("optimizer_offload") and (fast.get("compile_step") or fast.get("cuda_graphs")):
        raise BenchError(
            f"optimizer_offload ({memory.get('optimizer_offload_why', 'on')}) cannot run with compile_step or "
            "cuda_graphs: turn those off, or set optimizer_offload: off where the job fits without it"
        )


def compile_forward(model: nn.Module, fast: dict) -> nn.Module:
    """torch.compile the model's forward as `fast` asks (in place; the parameters and state dict are unchanged).
    cuda_graphs: mode 'reduce-overhead', inductor's kernels launched as CUDA graphs (cudagraph trees): a graph is
    recorded per input shape and replayed, so the static shapes of a run (its training batch; the last, smaller
    batch of an epoch and the evaluation batches get graphs of their own) cost one launch per step instead of one
    per kernel. The outputs live in the graph's memory until the next replay: the methods read a batch's logits
    before the next forward, and PyTorch raises, not corrupts, if anything reads them later."""
    if fast.get("cuda_graphs"):
        model.forward = torch.compile(model.forward, mode="reduce-overhead")
    elif fast.get("compile"):
        model.forward = torch.compile(model.forward)
    return model


# compiled_step's backend: inductor for runs; the tests set "aot_eager" (the same capture, no C++ code generation)
STEP_BACKEND = "inductor"
# Each compiled step keeps its own cache entries (isolate_recompiles), up to this many: one per optimizer it steps
# (the optimizer's graph guards on the optimizer object), its first step (state created) and an LR change; PredSim's
# whole step holds one per unit. The cap across all steps of a code object is raised to match.
STEP_RECOMPILE_LIMIT = 256


def compiled_step(fn: Callable, fast: dict, autograd: str = "traced") -> Callable:
    """`fn`, a whole training step (forward, loss, backward, optimizer step), compiled as one function when
    fast["compile_step"] is on, else `fn` itself. Off by default everywhere: a GPU speed switch for long runs, to be
    measured (`bench devicecheck`) before a profile turns it on.

    What torch 2.14 captures. `autograd="traced"`: dynamo traces `loss.backward()` (its trace_autograd_ops) into
    the forward's graph, so forward, loss and backward are one graph; the optimizer's step is a second graph
    (torch.optim breaks the graph around every step on purpose, so that the update compiles as an in-place no-grad
    graph); `zero_grad` runs eagerly (dynamo skips it; it only drops references). The step must hold no tensor of
    the backward's graph across the optimizer's step (return it detached from a nested function, see
    `ce_step`), or dynamo breaks the graph before the backward and runs it eagerly. `autograd="compiled"`: compiled
    autograd compiles every backward as a graph of its own; for steps that loop over units or optimizers (PredSim):
    a graph break inside a loop makes dynamo run that frame eagerly and compile only the calls it makes (forward
    and loss, the optimizers' steps), and a traced backward would then run eagerly. The two cannot mix (torch
    refuses autograd.grad under compiled autograd).

    Learning rates stay floats: a scheduler's first change recompiles the optimizer's graph once with the LR as an
    input (dynamo's automatic dynamic floats), later changes reuse it. Random draws inside the step (dropout)
    come, under inductor, from its own generator seeded from torch's: as random and as reproducible for a seed,
    not the plain step's numbers. cuda_graphs (CUDA only): mode reduce-overhead, the graphs replayed as CUDA
    graphs, one recording per input shape (the epoch's last, smaller batch gets its own); what the step returns
    lives in the graph's memory until its next replay, and the methods read it before."""
    if not fast.get("compile_step"):
        return fn
    kw = {"mode": "reduce-overhead"} if fast.get("cuda_graphs") else {}
    with torch._dynamo.config.patch(compiled_autograd=autograd == "compiled"):  # read when the wrapper is made
        compiled = torch.compile(
            fn, backend=STEP_BACKEND, recompile_limit=STEP_RECOMPILE_LIMIT, isolate_recompiles=True, **kw
        )

    def step(*args):
        # read while tracing: only the steps trace the backward, other compiled code keeps torch's defaults
        with torch._dynamo.config.patch(trace_autograd_ops=True, accumulated_recompile_limit=16 * STEP_RECOMPILE_LIMIT):
            return compiled(*args)

    return step


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision ('fp32': none)."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def unique_parameters(modules) -> list:
    """The parameters of `modules`, each once, in order (modules may share parameters)."""
    seen, out = set(), []
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def train_test_batches(data, cfg: dict, device, seed: int):
    """The training batches (shuffled, augmented as the config says, seeded) and the test batches (in order)."""
    from bench.data.loader import Batches

    norm = cfg["normalize"]
    train = Batches(
        data.x_train,
        data.y_train,
        cfg["batch_size"],
        device=device,
        mean=norm["mean"],
        std=norm["std"],
        augment=cfg["augment"],
        shuffle=True,
        seed=seed,
        random_draws=cfg.get("random_draws", "per_batch"),
    )
    test = Batches(
        data.x_test, data.y_test, cfg.get("eval_batch_size", 512), device=device, mean=norm["mean"], std=norm["std"]
    )
    return train, test


def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg.get("momentum", 0.0),
            weight_decay=cfg.get("weight_decay", 0.0),
            nesterov=cfg.get("nesterov", False),
        )
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(
            params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0), eps=cfg.get("adam_eps", 1e-8)
        )
    raise ValueError(f"unknown optimizer '{cfg['optimizer']}'")


def make_scheduler(optimizer, cfg: dict):
    """Step once per epoch: the LR is multiplied by lr_gamma after each epoch listed in lr_milestones."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.get("lr_milestones", []), cfg.get("lr_gamma", 0.1))


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, batches, device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) over all batches; one host sync at the end."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in batches:
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
    return loss_sum.item() / n, 100.0 * correct.item() / n


class EpochTimer:
    def __init__(self, device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self.start


class SpanTimer:
    """Sums the durations of code spans without a host-device sync per span (CUDA events on a GPU); read `total()`
    only after the device has been synchronised (EpochTimer does)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list = []
        self.seconds = 0.0

    @contextmanager
    def span(self):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((start, end))
        else:
            t = time.perf_counter()
            yield
            self.seconds += time.perf_counter() - t

    def total(self) -> float:
        """Seconds since the last call (and reset)."""
        if self.events:
            torch.cuda.synchronize()
            self.seconds += sum(s.elapsed_time(e) for s, e in self.events) / 1000.0
            self.events = []
        out, self.seconds = self.seconds, 0.0
        return out


@contextmanager
def requires_grad_restored(model: nn.Module):
    """The parameters' requires_grad flags as they are on entry come back on exit, also when the block raises; inside
    the block a method turns flags off as it goes (layerwise.frozen_parameters turns them all off on entry)."""
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
