"""The resource model (bench/cost/resources.py, `bench plan --fit`): the saved-tensor count against a hand count, the
meta device against the CPU, a measured training step against the prediction, the papers' node and its overflows,
and the command's exit codes."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from bench import experiments as ex
from bench.cost import resources


def test_the_saved_bytes_of_a_small_net_are_counted_by_hand():
    """Linear(10 -> 20), ReLU, Linear(20 -> 3) on a batch of 4: the first Linear saves its input (4 x 10 floats),
    the ReLU its output, which the second Linear saves too (one storage, counted once); weights are not counted."""
    first, second = nn.Linear(10, 20), nn.Sequential(nn.ReLU(), nn.Linear(20, 3))
    model = nn.Sequential(first, second)
    x = torch.randn(4, 10)
    assert resources.saved_bytes(model, [first, second], x) == [4 * 10 * 4, 4 * 20 * 4]
    with torch.device("meta"):
        first, second = nn.Linear(10, 20), nn.Sequential(nn.ReLU(), nn.Linear(20, 3))
        on_meta = resources.saved_bytes(nn.Sequential(first, second), [first, second], torch.zeros(4, 10))
    assert on_meta == [4 * 10 * 4, 4 * 20 * 4]
    # the ReLU ends the first part: it saves its output first, which the second part's Linear saves too; trained on
    # its own (alone), the second part saves it
    first, second = nn.Sequential(nn.Linear(10, 20), nn.ReLU()), nn.Linear(20, 3)
    model = nn.Sequential(first, second)
    assert resources.saved_bytes(model, [first, second], x) == [4 * 10 * 4 + 4 * 20 * 4, 0]
    assert resources.saved_bytes(model, [first, second], x, alone=True) == [4 * 10 * 4 + 4 * 20 * 4, 4 * 20 * 4]


@pytest.mark.parametrize("neighbours", ["data", "batch"])
def test_an_si_stage_holds_what_the_model_counts(neighbours):
    """An SI step on block 1 of LeNet (bench.methods.si's data and batch steps, by hand): what autograd saves in it
    (the block's tensors with its input, the triplet terms' differences), beside the anchors' own features, is the
    model's count (`_step_activations`' stage: what the block saves on its own for the anchors and partners, and
    `_stage_tensors`)."""
    from torch.autograd.graph import saved_tensors_hooks

    from bench.methods import si

    exp = ex.get("karimi-fashion_mnist-lenet-si_forward")
    cfg = ex.config(exp, "smoke")
    s = resources.shapes(cfg, exp.dataset)
    torch.manual_seed(0)
    model = resources.config_model(cfg, exp.dataset).train()
    weights = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    b = 6
    with torch.no_grad():  # the frozen prefix's features of the anchors and their two partners
        f, partners = (
            model.blocks[0](torch.randn(b, *model.input_shape)),
            model.blocks[0](torch.randn(2 * b, *model.input_shape)),
        )
    saved: dict = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in weights:
            saved[key] = max(saved.get(key, 0), t.numel() * t.element_size())
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        if neighbours == "data":
            z = model.blocks[1](torch.cat([f, partners])).flatten(1)
            si.triplet_terms(z[:b], z[b : 2 * b], z[2 * b :]).sum().backward()
            anchors = 3
        else:
            z = model.blocks[1](f).flatten(1)
            pos, neg = torch.randint(0, b, (b,)), torch.randint(0, b, (b,))
            si.triplet_terms(z, z[pos], z[neg]).sum().backward()
            anchors = 1
    held = sum(saved.values()) + f.numel() * f.element_size() * (neighbours == "data")  # f beside the concatenation
    cost = si.COST
    counted = anchors * b * s["saved_alone"][1] + resources._stage_tensors(cost, {"neighbours": neighbours}, s, 1, b)
    assert held == pytest.approx(counted, rel=0.02), (held, counted)


@pytest.mark.parametrize(
    "eid",
    [
        "ma-cifar10-vgg8b-backprop",
        "cruciata-imagenette-resnet18-backprop",
        "karimi-dbpedia-vdcnn9-backprop-sgd",
        "karimi-cifar10-lenet-si_forward",
    ],
)
def test_the_meta_count_is_the_cpu_count(eid):
    exp = ex.get(eid)
    cfg = ex.config(exp, "check")
    key = (
        json.dumps(cfg["architecture"], sort_keys=True),
        json.dumps(cfg["model"], sort_keys=True),
        exp.dataset,
        cfg.get("input_size"),
    )
    meta, cpu = resources._shapes(*key, "meta"), resources._shapes(*key, "cpu")
    assert meta["params"] == cpu["params"] and meta["outs"] == cpu["outs"]
    # VD-CNN's k-max pooling saves one more small index tensor on meta (8 bytes x k x channels): within 1 %
    assert sum(meta["saved"]) == pytest.approx(sum(cpu["saved"]), rel=0.01)
    assert all(s > 0 for s in cpu["saved"][:-1])


STEP = """
import gc, sys, json, torch
sys.path.insert(0, {root!r})
from bench import experiments as ex
from bench.cost.resources import config_model as _model


def status(key):  # this process's own memory, kB (/proc: getrusage's ru_maxrss starts at the parent's RSS)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


torch.set_num_threads(1)
exp = ex.get({eid!r}); cfg = ex.config(exp, "paper")
model = _model(cfg, exp.dataset).train()
x = torch.randn(({batch}, *model.input_shape)); y = torch.randint(0, model.num_classes, ({batch},))
gc.collect()
before = status("VmRSS")  # now, not the peak so far (building the model had its own)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the high-water mark reset to the current RSS
torch.nn.functional.cross_entropy(model(x), y).backward()
print(json.dumps(status("VmHWM") - before))
"""


@pytest.mark.parametrize("eid,batch", [("ma-cifar10-vgg8b-backprop", 64), ("cruciata-cifar10-resnet18-backprop", 64)])
def test_a_measured_training_step_is_predicted(eid, batch):
    """One forward and backward of a paper-width model on the CPU, in a fresh process: its peak resident memory
    grows by the saved tensors, the gradients and the temporaries the allocator keeps; the prediction for a CPU job
    (batch x saved bytes per sample x CPU_STEP_OVERHEAD + one gradient per parameter) is within 0.65-1.5x of what
    the step measured."""
    from pathlib import Path

    code = STEP.format(root=str(Path(__file__).resolve().parents[1]), eid=eid, batch=batch)
    grown = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600).stdout
    )
    exp = ex.get(eid)
    shapes = resources.shapes(ex.config(exp, "paper"), exp.dataset)
    predicted = batch * sum(shapes["saved"]) * resources.CPU_STEP_OVERHEAD + 4 * sum(shapes["params"])
    assert 0.65 <= predicted / grown <= 1.5, (predicted, grown)


def test_the_papers_node_and_what_overflows_it(monkeypatch):
    dbpedia = resources.job_resources(ex.get("karimi-dbpedia-vdcnn9-si_forward"), "paper")
    # 560,000 x 65,536 layer outputs cannot be held: the search streams within its 8 GiB, and the job fits
    assert not resources.overflow(dbpedia, resources.PAPERS_NODE)
    assert dbpedia["transient"]["pair search"] <= 8192 * 2**20
    # the paper profile recomputes activations where a job would not fit otherwise (activation_checkpointing auto)
    recomputed = resources.job_resources(ex.get("cruciata-imagenette-resnet152-backprop"), "paper")
    assert recomputed["recompute"]["on"] and not resources.overflow(recomputed, resources.PAPERS_NODE)
    orig = ex.config
    monkeypatch.setattr(ex, "config", lambda e, p: {**orig(e, p), "activation_checkpointing": "off"})
    resnet = resources.job_resources(ex.get("cruciata-imagenette-resnet152-backprop"), "paper")
    assert resnet["device_bytes"] > 24e9  # batch 256 at 160 px in fp32: more than an RTX 3090 holds
    (line,) = resources.overflow(resnet, resources.PAPERS_NODE)
    assert line.startswith("device ") and "> 24.0 GB (largest part: activations" in line
    assert not resources.overflow(resnet, resources.Node(80e9, 128e9))
    on_cpu = resources.job_resources(ex.get("cruciata-imagenette-resnet152-backprop"), "paper", cpu=True)
    assert on_cpu["device_bytes"] == 0 and on_cpu["host_bytes"] > resnet["device"]["activations"]


@pytest.mark.parametrize(
    "text,node",
    [
        ("gpu=24,host=64", resources.Node(24e9, 64e9)),
        ("host=16", resources.Node(0.0, 16e9)),
        (" gpu=80 , host=0.5", None),
    ],
)
def test_a_node_is_parsed(text, node):
    parsed = resources.Node.parse(text)
    assert parsed == (node or resources.Node(80e9, 0.5e9))


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("gpu=24", "host=<GB>"),
        ("gpu=x,host=1", "'x' is not a number"),
        ("cpu=4,host=1", "expected gpu=<GB>,host=<GB>"),
        ("gpu=-1,host=2", "at least 0"),
    ],
)
def test_a_bad_node_is_refused(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        resources.Node.parse(text)


FIT_JOBS = [
    "ma-cifar10-vgg8b-predsim",
    "karimi-cifar10-lenet-si_forward",
    "cruciata-mnist-vgg11-learn_drop",
    "bhyravabhottla-cifar10-cnn12-layer_to_layer",
]


def test_plan_fit_lists_what_does_not_fit_and_exits_1(tmp_path, capsys, monkeypatch):
    """`bench plan --fit` over four smoke jobs (one per paper; the plan's own loop, the profile's jobs replaced):
    every job gets its peaks in --write's JSON; a node too small lists the jobs with what overflows and exits 1; a
    malformed node is one line and exit 2."""
    from bench.cli import main

    monkeypatch.setattr("bench.cost.plan.targets", lambda profile: FIT_JOBS)

    def plan(*args):
        code = main(["plan", "--profile", "smoke", "--calibrate", "printed", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = plan("--fit", "gpu=24,host=64", "--write", str(tmp_path / "plan.json"))
    assert code == 0 and "All 4 smoke jobs fit." in out and "Largest device peak" in out
    jobs = json.loads((tmp_path / "plan.json").read_text())["jobs"]
    assert [j["experiment"] for j in jobs] == FIT_JOBS
    assert all(j["device_bytes"] > 0 and j["host_bytes"] > 0 and j["memory"]["device"] for j in jobs)
    code, out, _ = plan("--fit", "gpu=0.001,host=64")
    assert code == 1 and "4 of 4 smoke jobs do not fit:" in out and "> 0.0 GB (largest part: " in out
    code, out, _ = plan("--fit", "host=0.5")  # a CPU-only node: the host part must hold the process
    assert code == 1 and "host " in out and "(largest part: process" in out
    code, _, err = plan("--fit", "gpu=24")
    assert code == 2 and err.strip().count("\n") == 0 and "host=<GB>" in err


def test_plan_fit_names_the_jobs_that_fit_by_recomputing_or_offloading(capsys, monkeypatch):
    """On the papers' node, the paper jobs that fit only by recomputing activations or by keeping PredSim's
    optimizer states on the host are listed under their switch, and a job that needs neither is in neither list."""
    from bench.cli import main

    jobs = ["cruciata-imagenette-resnet152-backprop", "ma-cifar10-resnet50-predsim-wide", "ma-cifar10-vgg8b-predsim"]
    monkeypatch.setattr("bench.cost.plan.targets", lambda profile: jobs)
    code = main(["plan", "--profile", "paper", "--calibrate", "printed", "--fit", "gpu=24,host=64"])
    out = capsys.readouterr().out
    assert code == 0 and "All 3 paper jobs fit." in out
    recompute, offload = out.split("recompute their blocks' activations")[1].split("optimizer states on the host")
    assert "- cruciata-imagenette-resnet152-backprop: device" in recompute and "predsim" not in recompute
    assert "- ma-cifar10-resnet50-predsim-wide: device" in offload and "vgg8b" not in offload
