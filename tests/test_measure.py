"""Parameters and FLOPs: ptflops against a hand count, the model measurements behind the exact cells, and
their verdicts."""

import pytest
import torch
from torch import nn

from bench.claims.registry import load_claims
from bench.models.common import BlockNet
from bench.run import deterministic as det
from bench.run.measure import FLOPS_BACKENDS, count_parameters, forward_macs, part_parameters
from bench.verdicts import cells as vd


def small_net():
    """conv 3->4 (3x3, pad 1, bias) + ReLU on 3x8x8, then Linear 256->10."""
    return BlockNet(
        [nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())],
        nn.Sequential(nn.Flatten(), nn.Linear(256, 10)),
        (3, 8, 8),
        10,
    )


def test_ptflops_against_a_hand_count():
    conv = 8 * 8 * 4 * (3 * 3 * 3)  # output positions x out channels x (in channels x kernel) = 6912
    conv_bias, relu = 8 * 8 * 4, 8 * 8 * 4  # one add per output element; one op per activated element
    linear, linear_bias = 256 * 10, 10
    assert forward_macs(small_net(), "pytorch") == conv + conv_bias + relu + linear + linear_bias  # 9994
    assert forward_macs(small_net(), "aten") == conv + conv_bias + linear + linear_bias  # no activations
    assert forward_macs(small_net(), "pytorch+functional") == conv + conv_bias + 2 * relu + linear + linear_bias
    assert set(FLOPS_BACKENDS) == {"pytorch", "pytorch+functional", "aten"}


def test_macs_leave_the_model_as_it_was():
    net = small_net().train()
    forward_macs(net)
    assert net.training and not hasattr(net.blocks[0][0], "__flops__")


def test_parameters_count_frozen_ones_and_parts():
    net = small_net()
    net.blocks[0][0].weight.requires_grad_(False)
    assert count_parameters(net) == {"total": 112 + 2570, "trainable": 4 + 2570}
    assert part_parameters(net) == {"block0": 112, "head": 2570}


def test_torchvision_imagenet_convention_matches_torchvision():
    import torchvision

    conv = next(c for c in det.spec("cruciata")["conventions"] if c["name"] == "imagenet224")
    tv = torchvision.models
    for model, reference in [
        ("vgg11", tv.vgg11_bn),
        ("vgg16", tv.vgg16_bn),
        ("vgg19", tv.vgg19_bn),
        ("resnet18", tv.resnet18),
        ("resnet50", tv.resnet50),
        ("resnet101", tv.resnet101),
        ("resnet152", tv.resnet152),
    ]:
        with torch.device("meta"):  # shapes only: no weights drawn for 60-144 M parameters a model
            ours = det.build("cruciata", model, conv)
            theirs = reference(weights=None)
        assert count_parameters(ours)["total"] == sum(p.numel() for p in theirs.parameters()), model


def test_measurements_come_from_the_registry():
    found = det.measurements()
    assert set(found) == {"bhyravabhottla-cnn12"} | {
        f"cruciata-{m}" for m in ("vgg11", "vgg16", "vgg19", "resnet18", "resnet50", "resnet101", "resnet152")
    }
    assert det.spec("cruciata")["primary"] == {"convention": "imagenet224", "backend": "pytorch"}


def exact_verdict(claim, value):
    """The verdict of a cell computed from the model alone; the smoke profile, because exact counts are judged in
    every profile (they are measured at full width whatever the profile)."""
    return vd.judge([vd.Cell(claim, [value], exact=True)], "smoke")[0].verdict


def test_cnn12_measurement_reproduces_three_counts_and_refutes_two():
    result = det.measure("bhyravabhottla-cnn12")
    claims = {c.part: c for c in load_claims() if c.paper == "bhyravabhottla" and c.metric == "params"}
    values = {part: det.claim_value(c, result) for part, c in claims.items()}
    assert values == {"conv1": 896, "conv2": 9248, "conv3": 18496, "conv4": 36928, "fc1": 2097664}
    verdicts = {part: exact_verdict(claims[part], v) for part, v in values.items()}
    assert verdicts == {
        "conv1": "REPRODUCED",
        "conv2": "NOT REPRODUCED",
        "conv3": "REPRODUCED",
        "conv4": "NOT REPRODUCED",
        "fc1": "REPRODUCED",
    }


@pytest.mark.parametrize(
    "printed,value,expected",
    [
        ("1,987.80", 1987.804, "REPRODUCED"),
        ("1,987.80", 1987.81, "NOT REPRODUCED"),
        ("9,262.2", 9262.24, "REPRODUCED"),
        ("896", 896.4, "REPRODUCED"),
        ("896", 9248, "NOT REPRODUCED"),
    ],
)
def test_exact_verdict_rounds_to_the_printed_precision(printed, value, expected):
    claim = next(c for c in load_claims() if c.metric == "flops")
    claim = type(claim)(**{**claim.row_dict(), "printed": printed, "value": float(printed.replace(",", ""))})
    assert exact_verdict(claim, value) == expected


def test_models_command_lists_models_with_their_cells(capsys):
    from bench.cli import main

    assert main(["models", "--paper", "bhyravabhottla", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    cnn = next(line for line in out if line.startswith("bhyravabhottla,cnn12,cifar100"))
    assert ",2214532," in cnn and "bhyravabhottla.text.cnn12.conv2.params" in cnn
