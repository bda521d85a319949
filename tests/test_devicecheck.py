"""The GPU-window device check: end to end on this CPU at toy size, every step ok, saying it ran on a CPU; and its
budget logic, on a clock driven by hand, so that no assertion here depends on how fast or loaded the machine is."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import shared_raw

from bench.cost import devicecheck

# the end-to-end run must never skip a step for time: a day, far above any toy step (their expect_s add up to
# 298 s), so that a slow or loaded machine takes longer and still checks every step. The step budgets themselves
# are tested on a fake clock below.
NO_LIMIT_S = 24 * 3600


@pytest.mark.slow
def test_the_device_check_runs_every_step_on_a_cpu(tmp_path):
    shared_raw("mnist", tmp_path / "data" / "MNIST" / "raw")
    shared_raw("fashion_mnist", tmp_path / "data" / "FashionMNIST" / "raw", "t10k-*.gz", also_as_train=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "devicecheck",
            "--out",
            str(tmp_path / "check"),
            "--budget",
            str(NO_LIMIT_S),
            "--device",
            "cpu",
            "--data-root",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=3600,  # a hang guard, not a speed bound
        # one torch thread: toy jobs are too small to gain from two, and two threads on a busy
        # 2-core machine spin against the other jobs (the methods step took 4-10x longer)
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "check" / "summary.json").read_text())
    assert summary["ran_on"].startswith("a CPU") and "Ran on a CPU" in (tmp_path / "check" / "summary.md").read_text()
    assert summary["size"] == "toy" and summary["budget_s"] == NO_LIMIT_S
    assert {k: v["status"] for k, v in summary["steps"].items()} == {
        "perf": "ok",
        "methods": "ok",
        "switches": "ok",
        "workflow": "ok",
        "probe": "ok",
    }
    switches = summary["steps"]["switches"]["switches"]  # every switch measured, plain against fast, losses equal
    assert [r["switch"] for r in switches] == list(devicecheck.SWITCHES)
    for r in switches:  # the fast job ran with the switch on (a CUDA-only one: off on this CPU), losses equal
        switch = devicecheck.SWITCHES[r["switch"]]
        if not switch.toy:  # the compiled step: tests/test_compiled_step.py, minutes of compilation here
            assert r["status"] == "skipped: not at toy size"
            continue
        assert r["status"] == "ok" and r["max_loss_gap"] is not None and r["max_loss_gap"] < 1e-4, r
        assert r["resolved"]["fast"] == (switch.plain if switch.cuda_only else switch.fast), r
        applied_as_set = ("checkpoint_writes", "optimizer_offload", "method_options.pair_search_precision")
        assert r["resolved_from"] == ("config" if switch.key in applied_as_set else "device"), r
    jobs = {j["method"]: j for j in summary["steps"]["methods"]["jobs"]}
    from bench.methods import IMPLEMENTED

    assert set(jobs) == set(IMPLEMENTED) and all(j["status"] == "ok" for j in jobs.values())
    for method in ("backprop", "learn_drop", "si_forward"):  # real MNIST / Fashion-MNIST where there is some
        assert jobs[method]["fp32"]["data"].startswith("real") and jobs[method]["bf16"]["precision"] == "bf16"
        assert len(jobs[method]["fp32"]["train_loss"]) == len(jobs[method]["bf16"]["train_loss"]) > 0
    assert summary["steps"]["workflow"]["jobs"][0]["status"] == "FINISHED"
    assert summary["steps"]["probe"]["forward_mac_units_per_s"] > 0
    assert (tmp_path / "check" / "plan_calibration.json").exists()


def test_a_budget_too_small_skips_steps_and_says_so(tmp_path):
    """5 s is below every toy step's expected time: each is recorded skipped, with what was left and what it needed,
    and none ran (no seconds of its own, nothing it writes). That a skipped step's function is never called, whatever
    the clock says, is proved on the fake clock below."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "devicecheck", "--out", str(tmp_path), "--budget", "5", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
    )  # a hang guard
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["steps"]) == ["perf", "methods", "switches", "workflow", "probe"]
    toy = devicecheck.SIZES["toy"]
    for name, step in summary["steps"].items():
        assert step["status"] == "skipped: out of budget" and "seconds" not in step
        assert step["left_s"] <= 5 and step["expected_s"] == toy[name]["expect_s"]
    assert not (tmp_path / "workflow").exists() and not (tmp_path / "plan_calibration.json").exists()
    assert "## perf: skipped: out of budget" in (tmp_path / "summary.md").read_text()


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float):
        self.now += seconds


STEPS = {
    "a": {"expect_s": 30, "knob": 1},
    "b": {"expect_s": 50},
    "c": {"expect_s": 40},
    "d": {"expect_s": 35},
    "e": {"expect_s": 0},
}


def test_the_budget_on_a_fake_clock(tmp_path, monkeypatch):
    """A step runs when its expected time is left, else it is skipped with left_s / expected_s and never called; the
    time a step takes (the clock moved inside it) is its seconds and leaves that much less for the next; a step
    that raises is recorded failed and the next still runs; summary.json and summary.md are rewritten after every
    step."""
    monkeypatch.setitem(devicecheck.SIZES, "toy", STEPS)
    clock = FakeClock()
    check = devicecheck.Check(tmp_path, torch.device("cpu"), 100, None, clock=clock)
    assert check.size == "toy" and check.left() == 100
    on_disk = lambda: json.loads((tmp_path / "summary.json").read_text())  # noqa: E731
    calls = []

    def takes(seconds, result=None):
        def fn(size):
            calls.append(size)
            clock.advance(seconds)
            return result or {}

        return fn

    check.step("a", takes(45, {"found": 7}))  # 100 left, 30 expected: runs, takes 45
    assert calls == [STEPS["a"]] and check.left() == 55
    assert on_disk()["steps"] == {"a": {"status": "ok", "found": 7, "seconds": 45}} and on_disk()["elapsed_s"] == 45
    assert "## a: ok (45.0 s)" in (tmp_path / "summary.md").read_text()

    def b(size):  # the summary is on disk before the next step starts
        assert list(on_disk()["steps"]) == ["a"]
        return takes(20)(size)

    check.step("b", b)  # 55 left, 50 expected: runs, takes 20
    assert check.left() == 35 and on_disk()["steps"]["b"] == {"status": "ok", "seconds": 20}

    check.step("c", takes(1))  # 35 left, 40 expected: it would have fit the whole budget, the first two used it
    assert len(calls) == 2 and check.left() == 35
    assert on_disk()["steps"]["c"] == {"status": "skipped: out of budget", "left_s": 35, "expected_s": 40}
    assert "## c: skipped: out of budget" in (tmp_path / "summary.md").read_text()

    def breaks(size):
        clock.advance(5)
        raise RuntimeError("no such kernel")

    check.step("d", breaks)  # 35 left, 35 expected: exactly enough runs; its failure is recorded, with its time
    assert on_disk()["steps"]["d"] == {"status": "failed: RuntimeError: no such kernel", "seconds": 5}
    check.step("e", takes(0, {"after": True}))  # the step after a failure runs
    summary = on_disk()
    assert list(summary["steps"]) == ["a", "b", "c", "d", "e"] and summary["steps"]["e"]["status"] == "ok"
    assert summary["elapsed_s"] == 70 and summary["budget_s"] == 100 and check.left() == 30


def test_the_methods_step_stops_starting_jobs_when_the_budget_runs_out(tmp_path, monkeypatch):
    """Inside the methods step, a method starts only while two of its jobs' time (fp32 and bf16) is left."""
    clock = FakeClock()
    check = devicecheck.Check(tmp_path, torch.device("cpu"), 100, None, clock=clock)
    ran = []

    def job(eid, precision, device, size, data_root):
        ran.append((eid, precision))
        clock.advance(20)
        return {"precision": precision, "train_loss": [1.0, 0.5 if precision == "fp32" else 0.75]}

    monkeypatch.setattr(devicecheck, "method_job", job)
    rows = devicecheck.methods_step(check, {"job_s": 10})["jobs"]
    # 100 s: two methods at 40 s each leave 20 s, which holds one more (2 x 10 s expected); then out of budget
    assert len(ran) == 6 and [r["status"] for r in rows] == ["ok"] * 3 + ["skipped: out of budget"] * 6
    assert [r["method"] for r in rows] == list(devicecheck.METHOD_JOBS) and rows[0]["max_loss_gap"] == 0.25
