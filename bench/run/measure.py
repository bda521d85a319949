"""What the tables report besides accuracy, measured (never estimated): parameters, time, peak memory,
and the hardware and code they were measured on."""

import contextlib
import os
import platform
import resource
import socket
import subprocess
from functools import cache
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]


def count_parameters(model: nn.Module) -> dict:
    """Counted by the suite itself (ptflops skips frozen ones): all parameters and the trainable ones."""
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def part_parameters(model: nn.Module) -> dict:
    """Parameters of every named block and of the head (frozen ones included)."""
    parts = dict(zip(model.block_names, model.blocks))
    parts["head"] = model.head
    return {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}


def parameter_device(module: nn.Module) -> torch.device:
    """The device a module's parameters are on (the meta device when only its shapes are counted)."""
    return next(module.parameters(), torch.zeros(0)).device


@contextlib.contextmanager
def meta_shape_passthrough():
    """While counting on the meta device: batch norm and leaky ReLU give their input's shape without computing.
    Torch runs both on meta tensors through Python decompositions, most of a count's time, and a count needs only
    their output's shape, which is their input's: ptflops and bench.cost.method_costs count a BN or activation
    layer by its sizes, and the 'aten' backend counts neither. Tensors on any other device are computed as usual."""
    from torch.nn import functional

    saved = {name: getattr(functional, name) for name in ("batch_norm", "leaky_relu")}

    def batch_norm(input, *args, **kwargs):
        return input if input.device.type == "meta" else saved["batch_norm"](input, *args, **kwargs)

    def leaky_relu(input, negative_slope=0.01, inplace=False):
        if input.device.type == "meta":
            return input if inplace else torch.empty_like(input)
        return saved["leaky_relu"](input, negative_slope, inplace)

    functional.batch_norm, functional.leaky_relu = batch_norm, leaky_relu
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(functional, name, original)


# ptflops counting conventions: (backend, count torch.nn.functional / tensor ops too)
FLOPS_BACKENDS = {"pytorch": ("pytorch", False), "pytorch+functional": ("pytorch", True), "aten": ("aten", None)}


def forward_macs(model: nn.Module, backend: str = "pytorch", copy_model: bool = True) -> int:
    """Multiply-accumulates of one forward pass of one sample at the model's input shape, counted by ptflops.

    ptflops counts MACs, not FLOPs (FLOPs = 2 x MACs, kept under their own name by the callers). Backends:
    'pytorch' hooks the nn.Modules only (convs and linears with their bias adds, BN, activations, pools: ptflops'
    classic count); 'pytorch+functional' also counts functional and tensor ops (residual adds, but it counts an
    nn.ReLU twice, once as module and once as F.relu); 'aten' counts the aten convolutions and matrix products
    with their bias adds. The model is copied to the CPU in eval mode; the caller's model and mode are untouched
    (`copy_model=False`: counted on the model itself, left in eval mode with ptflops' counters on it, for a model
    built only to be counted).
    A model on the meta device is counted there (shapes only, no arithmetic): the same count for 'pytorch' and
    'aten', but not for 'pytorch+functional', whose tensor-op hooks count differently on meta tensors, so that
    backend refuses it.
    """
    import copy

    from ptflops import get_model_complexity_info

    if backend not in FLOPS_BACKENDS:
        raise ValueError(f"FLOPs backend must be one of {', '.join(FLOPS_BACKENDS)}")
    engine, functional = FLOPS_BACKENDS[backend]
    on_meta = parameter_device(model).type == "meta"  # shapes only: see the note above
    if functional and on_meta:
        raise ValueError("forward_macs: the 'pytorch+functional' count needs a model on the CPU, not on meta")
    config = {} if functional is None else {"count_functional": functional}
    home = "meta" if on_meta else "cpu"
    clone = (copy.deepcopy(model) if copy_model else model).to(home).eval()
    shape = tuple(model.input_shape)
    dtype = getattr(model, "input_dtype", torch.float32)
    make_input = (lambda res: torch.zeros((1, *res), dtype=dtype, device=home)) if dtype != torch.float32 else None
    with torch.no_grad(), meta_shape_passthrough() if on_meta else contextlib.nullcontext():
        macs, _ = get_model_complexity_info(
            clone,
            shape,
            as_strings=False,
            print_per_layer_stat=False,
            input_constructor=make_input,
            backend=engine,
            verbose=False,
            backend_specific_config=config,
        )
    return int(macs)


def reset_peak_memory(device: torch.device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def host_rss_mb() -> float:
    """This process's resident set size now, MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def own_peak_rss_mb() -> float:
    """This process's peak resident set size, MiB: Linux's VmHWM (the high-water mark of this process's own
    memory; getrusage's ru_maxrss also counts what the parent held when it forked this process), elsewhere
    ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; macOS bytes


def peak_memory_mb(device: torch.device) -> dict:
    """CUDA: peak allocated by torch on the device. CPU: the process's peak resident set size. Both: the host
    process's resident set size now (`host_rss_after_mb`: called after training, it is what a notebook reads with
    psutil once its fit returns)."""
    import psutil

    rss_mb = own_peak_rss_mb()
    now_mb = psutil.Process().memory_info().rss / 2**20
    if device.type == "cuda":
        return {
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "memory_kind": "cuda_peak_allocated",
            "peak_host_rss_mb": rss_mb,
            "host_rss_after_mb": now_mb,
        }
    return {
        "peak_memory_mb": rss_mb,
        "memory_kind": "cpu_peak_rss",
        "peak_host_rss_mb": rss_mb,
        "host_rss_after_mb": now_mb,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_name()} ({torch.get_num_threads()} threads)"


@cache
def code_version() -> str:
    """git commit of the suite, '-dirty' when tracked files other than the generated reports differ from it;
    'unknown' outside a checkout ($BENCH_CODE_VERSION overrides it, e.g. for an installed copy)."""
    if os.environ.get("BENCH_CODE_VERSION"):
        return os.environ["BENCH_CODE_VERSION"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def tf32_settings() -> dict:
    """Whether fp32 convolutions and matrix products may run as TF32 on GPUs that have it (the framework's
    defaults unless changed: convolutions yes, matrix products no); recorded with every run."""
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    matmul = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    return {
        "tf32_conv": conv == "tf32" if conv not in (None, "none") else bool(torch.backends.cudnn.allow_tf32),
        "tf32_matmul": matmul == "tf32"
        if matmul not in (None, "none")
        else bool(torch.backends.cuda.matmul.allow_tf32),
    }


def environment(device: torch.device) -> dict:
    import bench

    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        **tf32_settings(),
        "cuda": torch.version.cuda or "",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bench_version": bench.__version__,
        "code_version": code_version(),
    }
