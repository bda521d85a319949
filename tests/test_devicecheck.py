"""The GPU-window device check runs end to end on this CPU at toy size, within its budget, and says it ran on a CPU."""
import json
import subprocess
import sys
import time

from conftest import shared_raw

BUDGET_S = 170


def test_the_device_check_runs_on_a_cpu_in_under_three_minutes(tmp_path):
    shared_raw("mnist", tmp_path / "data" / "MNIST" / "raw")
    shared_raw("fashion_mnist", tmp_path / "data" / "FashionMNIST" / "raw", "t10k-*.gz", also_as_train=True)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench", "devicecheck", "--out", str(tmp_path / "check"), "--budget",
                           str(BUDGET_S), "--device", "cpu", "--data-root", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert took < 180, f"{took:.0f} s"
    summary = json.loads((tmp_path / "check" / "summary.json").read_text())
    assert summary["ran_on"].startswith("a CPU") and "Ran on a CPU" in (tmp_path / "check" / "summary.md").read_text()
    assert {k: v["status"] for k, v in summary["steps"].items()} == \
        {"perf": "ok", "methods": "ok", "workflow": "ok", "probe": "ok"}
    jobs = {j["method"]: j for j in summary["steps"]["methods"]["jobs"]}
    from bench.methods import IMPLEMENTED

    assert set(jobs) == set(IMPLEMENTED) and all(j["status"] == "ok" for j in jobs.values())
    for method in ("backprop", "learn_drop", "si_forward"):  # real MNIST / Fashion-MNIST where there is some
        assert jobs[method]["fp32"]["data"].startswith("real") and jobs[method]["bf16"]["precision"] == "bf16"
        assert len(jobs[method]["fp32"]["train_loss"]) == len(jobs[method]["bf16"]["train_loss"]) > 0
    assert summary["steps"]["workflow"]["jobs"][0]["status"] == "FINISHED"
    assert summary["steps"]["probe"]["forward_mac_units_per_s"] > 0


def test_a_budget_too_small_skips_steps_and_says_so(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "devicecheck", "--out", str(tmp_path), "--budget", "5",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(v["status"] == "skipped: out of budget" for v in summary["steps"].values())
    assert summary["elapsed_s"] < 60
