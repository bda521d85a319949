"""Every method learns on the smoke stand-ins: one smoke run per method, above chance by the binomial test that
the reports use (bench.verdicts.learning). A method that stops learning (a loss that no longer reaches the weights,
layers that never unfreeze, a head trained on nothing) fails here, although its runs would still finish."""

import pytest

from bench.verdicts import learning

# one experiment per method: the cheapest model it runs with on a 10-class stand-in (chosen by cost, not by result)
PER_METHOD = {
    "backprop": "cruciata-mnist-vgg11-backprop",
    "freezing": "cruciata-mnist-vgg11-freezing",
    "learn_drop": "cruciata-mnist-vgg11-learn_drop",
    "predsim": "ma-cifar10-vgg8-predsim",
    "si_forward": "karimi-fashion_mnist-lenet-si_forward",
    "fb_si": "karimi-fashion_mnist-lenet-fb_si",
    "greedy_layerwise": "karimi-fashion_mnist-lenet-greedy_layerwise",
    "belilovsky_greedy": "karimi-cifar10-simcnn_k1-belilovsky_greedy",
    "layer_to_layer": "bhyravabhottla-cifar10-cnn12-layer_to_layer",
}


def test_every_method_is_covered():
    from bench.methods import IMPLEMENTED

    assert set(PER_METHOD) == set(IMPLEMENTED)


@pytest.mark.parametrize("method", list(PER_METHOD))
def test_each_method_learns_on_the_smoke_stand_ins(smoke_runs, method):
    result = smoke_runs.get(PER_METHOD[method])  # the smoke DAG's run of this checkout, else trained here
    assert result["status"] == "FINISHED" and result["config"]["method"] == method
    ratio, p = learning.versus_chance(result)
    assert p < learning.ALPHA, (
        f"{PER_METHOD[method]}: {result['metrics']['test_accuracy']:.1f} % is {ratio:.2f}x "
        f"chance (p = {p:.3g}): the method does not learn"
    )


def test_a_run_at_chance_is_flagged():
    """The check itself can fail: accuracy at chance on 128 test samples is not above it; 3x chance is."""

    def result(acc):
        return {
            "config": {"dataset": "cifar10", "data": {"test_samples": 128}},
            "metrics": {"test_accuracy": acc},
            "data": {"test_samples": 128},
        }

    assert learning.versus_chance(result(10.9))[1] > learning.ALPHA
    assert learning.versus_chance(result(30.0))[1] < learning.ALPHA
    rows = learning.per_method(
        {
            ("x", 0): {
                **result(10.9),
                "status": "FINISHED",
                "config": {"dataset": "cifar10", "method": "predsim", "data": {"test_samples": 128}},
            }
        }
    )
    assert rows[0]["above"] == 0 and rows[0]["finished"] == 1
