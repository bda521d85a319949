"""Counting on the meta device (shapes only, no arithmetic) gives the CPU's counts: ptflops' 'pytorch' and 'aten'
backends for `bench measure`, and every part `bench plan` counts (blocks, head, Learn & Drop's cuts and stored
states, layer-to-layer's layers, the local heads of PredSim, Belilovsky and greedy layer-wise). 'pytorch+functional'
counts differently on meta tensors, so it is refused there and always counted on the CPU."""

import pytest
import torch

from bench import experiments as ex
from bench.cost import method_costs, model_parts, resources
from bench.run import deterministic as det
from bench.run.measure import forward_macs


@pytest.mark.parametrize("mid", ["bhyravabhottla-cnn12", "cruciata-resnet18"])
def test_measure_counts_on_meta_equal_the_cpu(mid):
    paper, model = det.measurements()[mid]
    convention = det.spec(paper)["conventions"][0]
    on_cpu = det.build(paper, model, convention)
    with torch.device("meta"):
        on_meta = det.build(paper, model, convention)
    for backend in ("pytorch", "aten"):
        assert forward_macs(on_meta, backend) == forward_macs(on_cpu, backend) > 0
    with pytest.raises(ValueError, match="pytorch\\+functional"):
        forward_macs(on_meta, "pytorch+functional")
    measured = det.measure(mid)["conventions"][0]["macs"]
    assert measured == {b: forward_macs(on_cpu, b) for b in ("pytorch", "pytorch+functional", "aten")}


@pytest.mark.parametrize(
    "eid",
    [
        "cruciata-cifar10-resnet18-learn_drop",
        "cruciata-mnist-vgg11-freezing",
        "bhyravabhottla-cifar10-cnn12-layer_to_layer",
        "ma-cifar10-vgg8b-predsim",
        "karimi-cifar10-simcnn_k2-belilovsky_greedy",
        "karimi-fashion_mnist-lenet-greedy_layerwise",
        "karimi-ag_news-vdcnn9-backprop-sgd",
    ],
)
def test_plan_parts_on_meta_equal_the_cpu(eid):
    exp = ex.get(eid)
    cfg = ex.config(exp, "smoke")
    model = resources.config_model(cfg, exp.dataset)
    on_cpu = method_costs.measure_parts(model, exp.method, cfg, forward_macs(model, "pytorch"))
    assert model_parts.counted_parts(exp, cfg) == on_cpu
