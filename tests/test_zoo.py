"""Every model a claim cell names builds, as its paper configures it for each dataset, and trains: a forward and
a backward pass on CPU at its real input size (reduced width, batch 2), with its blocks exposed."""

import pytest
import torch

from bench import experiments as ex
from bench.claims.datasets import DATASETS
from bench.claims.registry import load_claims
from bench.data.text import VOCAB_SIZE
from bench.models import build_model, missing_reason


def uses():
    found = set()
    for c in load_claims():
        if c.model:
            dataset = c.dataset or ("cifar100" if c.paper == "bhyravabhottla" else "imagenette")
            found.add((c.paper, c.model, dataset))
    return sorted(found)


@pytest.mark.parametrize("paper,model,dataset", uses(), ids=lambda v: str(v))
def test_model_builds_and_trains(paper, model, dataset):
    cfg, _ = ex.paper_config(ex.Experiment(paper, dataset, model, "backprop"))
    assert missing_reason(cfg["architecture"]) == ""
    info = DATASETS[dataset]
    size = cfg["input_size"]
    net = build_model(cfg["architecture"], info.channels, info.num_classes, size, dict(cfg["model"], width_mult=0.125))
    if info.kind == "text":
        x = torch.randint(0, VOCAB_SIZE, (2, size))
        assert net.input_shape == (size,) and net.input_dtype == torch.long
    else:
        x = torch.randn(2, info.channels, size, size)
        assert net.input_shape == (info.channels, size, size)
    out = net(x)
    assert out.shape == (2, info.num_classes) and net.num_classes == info.num_classes
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert len(net.blocks) == len(net.block_names) >= 2


def test_the_torch_free_names_are_what_each_family_builds():
    """bench.models.NAMES (read without importing torch, e.g. at every Snakemake start) equals every family's BASES."""
    import importlib
    import subprocess
    import sys

    from bench.models import FAMILIES, NAMES

    assert NAMES.keys() == FAMILIES.keys()
    for fam, module in FAMILIES.items():
        assert NAMES[fam] == set(importlib.import_module(module).BASES), fam
    code = "import sys; from bench.run.targets import targets; assert targets('paper'); print('torch' in sys.modules)"
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.strip() == "False", listed.stderr[-2000:]
