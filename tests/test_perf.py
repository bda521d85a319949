"""`bench perf` runs end to end on the CPU (a benchmark, not a timed test: only that it measures and reports)."""

import torch

from bench.cost import perf


def test_perf_measures_the_suite_step_and_the_reference_loop(capsys):
    found = perf.measure("LeNet (Fashion-MNIST)", torch.device("cpu"), 0.25, batches=2, rounds=1, samples=256)
    assert set(found["images_per_s"]) == {"reference (DataLoader, fp32)", "suite step, fp32"}
    assert all(v > 0 for v in found["images_per_s"].values())
    assert found["vs_reference"]["reference (DataLoader, fp32)"] == 1.0
    predsim = perf.measure("PredSim VGG-8b", torch.device("cpu"), 0.0625, batches=1, rounds=1, samples=128)
    assert predsim["experiment"] == "ma-cifar10-vgg8b-predsim" and predsim["vs_reference"]["suite step, fp32"] > 0

    from bench.cli import main

    assert main(["perf", "LeNet (Fashion-MNIST)", "--batches", "2", "--rounds", "1", "--width", "0.25"]) in (None, 0)
    out = capsys.readouterr().out
    assert "suite step, fp32" in out and "x reference" in out
