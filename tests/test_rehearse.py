"""`bench rehearse`: a paper experiment at its paper shapes for a few batches, stopped after its first checkpoint and
resumed in a second process, its host peak measured against bench.cost.resources' prediction."""

import json
import subprocess
import sys

import pytest

from bench import BenchError
from bench import experiments as ex
from bench.claims.datasets import DATASETS
from bench.cost import rehearse

EID = "karimi-fashion_mnist-lenet-si_forward"  # the smallest paper network with a cache and the pair search


def test_rehearsal_config_is_paper_shapes_on_a_few_batches():
    for eid in (EID, "ma-cifar10-resnet50-predsim", "cruciata-cifar10-vgg11-learn_drop"):
        exp = ex.get(eid)
        paper, cfg = ex.config(exp, "paper"), ex.config(exp, rehearse.PROFILE)
        assert cfg["model"] == paper["model"] and cfg["batch_size"] == paper["batch_size"]
        assert cfg.get("input_size") == paper.get("input_size") and cfg["architecture"] == paper["architecture"]
        assert cfg["data"]["source"] == "synthetic"
        assert cfg["data"]["train_samples"] == 2 * cfg["batch_size"]
        assert cfg["epochs"] == 2
    # each budget scaled by the rehearsal's share of the training split, for the methods that have it only
    cfg = ex.config(ex.get(EID), rehearse.PROFILE)
    share = cfg["data"]["train_samples"] / DATASETS["fashion_mnist"].train_size
    assert abs(cfg["method_options"]["prefix_cache_max_mb"] - 8192 * share) < 1e-9
    assert "feature_store_max_mb" not in cfg["method_options"]
    assert "prefix_cache_max_mb" not in ex.config(ex.get("ma-cifar10-resnet50-predsim"), rehearse.PROFILE).get(
        "method_options", {}
    )


def test_pair_search_budget_streams_where_the_full_run_streams(monkeypatch):
    """DBpedia's SI streams its 560,000 x 65,536 features on the papers' node: its rehearsal gets a budget that
    streams its own samples too (in few panels); LeNet's features fit: its rehearsal holds them, as the full run. The
    budget reaches the run's config through $BENCH_REHEARSAL_OPTIONS, for that method only, with its source."""
    from bench.cost.resources import shapes
    from bench.methods.si import search_plan

    dbpedia = "karimi-dbpedia-vdcnn9-si_forward"
    budget = rehearse.pair_search_mb(dbpedia)
    cfg = ex.config(ex.get(dbpedia), rehearse.PROFILE)
    dims = max(shapes(cfg, "dbpedia")["outs"][:-1])
    n = cfg["data"]["train_samples"]
    plan = search_plan(n, dims, min(n, 512), budget * 2**20, 0.0)
    assert plan["mode"] == "streamed" and plan["panels"] <= 16
    assert search_plan(n, dims, min(n, 512), 2 * budget * 2**20, 0.0)["mode"] == "held"  # the largest that streams
    assert rehearse.pair_search_mb(EID) == 8192 and rehearse.pair_search_mb("ma-cifar10-resnet50-predsim") is None
    monkeypatch.setenv(ex.REHEARSAL_OPTIONS, '{"si_forward": {"pair_search_max_mb": 12.5}}')
    opts = ex.config(ex.get(dbpedia), rehearse.PROFILE)
    assert opts["method_options"]["pair_search_max_mb"] == 12.5
    assert "bench rehearse" in opts["sources"]["method_options.pair_search_max_mb"]
    assert (
        "pair_search_max_mb" not in ex.config(ex.get("karimi-dbpedia-vdcnn9-fb_si"), rehearse.PROFILE)["method_options"]
    )


def test_default_jobs_one_per_combination_and_only_pattern():
    chosen = rehearse.jobs(None)
    combos = {(ex.get(e).paper, ex.get(e).model, ex.get(e).method) for e in chosen}
    assert len(combos) == len(chosen)
    from bench.run.targets import targets

    assert combos == {(ex.get(e).paper, ex.get(e).model, ex.get(e).method) for e in targets("paper")}
    assert not any(ex.get(e).variant for e in chosen if e.startswith("ma-cifar10-vgg8b-"))
    assert rehearse.jobs("karimi-dbpedia-*-si_forward") == [
        e for e in rehearse.jobs("karimi-dbpedia-*") if e.endswith("-si_forward")
    ]


def test_records_merge_and_report(tmp_path):
    """A rehearsal of some jobs keeps the records of the others; the report says what is not rehearsed yet."""
    path = tmp_path / "r.json"
    base = {
        "date": "2026-01-01T00:00:00+00:00",
        "batch_size": 128,
        "train_samples": 256,
        "test_samples": 512,
        "seconds": 3.0,
        "cpu_seconds": 4.0,
        "reason": "",
        "code_version": "abc",
        "command": "bench rehearse",
    }
    rehearse._write_json(
        path,
        {
            EID: {
                **base,
                "experiment": EID,
                "status": "passed",
                "ratio": 1.0,
                "predicted_host_bytes": 1e9,
                "measured_host_bytes": 1e9,
            }
        },
    )
    records = rehearse.load_records(path)
    other = "karimi-cifar10-lenet-fb_si"
    records[other] = {
        **base,
        "experiment": other,
        "status": "failed",
        "reason": "RuntimeError: boom",
        "command": f"bench rehearse --only '{other}' --resume",
    }
    rehearse._write_json(path, records)
    again = rehearse.load_records(path)
    assert set(again) == {EID, other}
    text = rehearse.markdown(again)
    assert "1 passed, 1 failed, 0 skipped" in text and "RuntimeError: boom" in text
    assert "- Commands: `bench rehearse --only '<experiment>'` (1 job, one at a time); `bench rehearse`\n" in text
    assert f"`{other}`" in text.split("## Not rehearsed yet")[1] and f"`{EID}`" not in text.split("## Not rehearsed")[1]


def test_rehearse_a_paper_job_end_to_end(tmp_path):
    """The real command: the LeNet SI job at paper shapes passes, resumed after its first epoch, with a measured host
    peak beside the prediction and the disk it wrote; a second rehearsal of another pattern keeps its record."""
    out = tmp_path / "r.json"
    report = tmp_path / "r.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "rehearse",
            "--only",
            EID,
            "--json",
            str(out),
            "--report",
            str(report),
            "--keep",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    record = json.loads(out.read_text())["records"][0]
    assert record["status"] == "passed", record
    assert record["resumed_from_epoch"] >= 1
    assert record["train_samples"] == 2 * record["batch_size"]
    assert 0.5 < record["ratio"] < 2.0, record  # the rehearsal's own prediction (its bar, 0.65-1.5, is reported)
    assert record["disk_written_bytes"] > 0 and record["pair_search_passes"]
    log = (tmp_path / "work" / EID / "run.log").read_text()
    assert "fault injected" in log and "resumed from epoch 1" in log
    assert EID in report.read_text() and "1 passed, 0 failed" in report.read_text()


# A stand-in for the job's `bench run` (the resume logic, not the training): with a fault pending it writes the
# checkpoint and fails as the injected fault does; else it finishes from the checkpoint and writes its result.
FAKE_RUN = """
import json, os, sys
from pathlib import Path
out = Path(sys.argv[1])
ckpt = out.with_name("seed0.ckpt.pt")
if os.environ.get("BENCH_FAULT"):
    ckpt.write_text("epoch 1")
    sys.exit(1)
out.write_text(json.dumps({"status": "FINISHED", "resumed_from_epoch": 1 if ckpt.exists() else 0, "metrics": {}}))
"""


def stand_in(monkeypatch, tmp_path):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    monkeypatch.setattr(rehearse, "_run_argv", lambda eid, out: [sys.executable, str(script), str(out)])
    return tmp_path / "work", tmp_path / "work" / EID


def stopped(folder, steps):
    """The job folder as a rehearsal stopped part-way leaves it: its steps so far, the last with no exit status."""
    (folder / rehearse.STEPS_FILE).write_text(json.dumps(steps))


def test_a_stopped_rehearsal_goes_on_from_its_checkpoint_with_resume(monkeypatch, tmp_path):
    """A rehearsal stopped while its second process ran (a machine's session ended): without --resume its folder is
    refused (never overwritten); with it, one more process resumes from the checkpoint and the job passes, its
    record counting every process; a job that finished is reported again, not run again."""
    work, folder = stand_in(monkeypatch, tmp_path)
    first = rehearse.rehearse_one(EID, work, timeout=120)
    assert first["status"] == "passed" and len(json.loads((folder / rehearse.STEPS_FILE).read_text())) == 2
    (folder / "seed0.json").unlink()  # as if stopped in the second process, which wrote nothing yet
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    steps = json.loads((folder / rehearse.STEPS_FILE).read_text())[:1]
    stopped(folder, [*steps, {**steps[0], "rc": None, "hwm": 7e9, "cpu_s": 0.0, "pid": int(gone.stdout)}])
    with pytest.raises(BenchError, match=f"{folder}: holds an earlier rehearsal of this job .--resume"):
        rehearse.rehearse_one(EID, work, timeout=120)
    again = rehearse.rehearse_one(EID, work, timeout=120, resume=True)
    assert again["status"] == "passed" and again["resumed_from_epoch"] == 1 and again["ran"], again
    assert [s["rc"] for s in json.loads((folder / rehearse.STEPS_FILE).read_text())] == [1, None, 0]
    assert again["measured_host_bytes"] == 7e9  # the stopped process's high-water mark counts
    runs = (folder / rehearse.STEPS_FILE).read_text()
    as_it_was = rehearse.rehearse_one(EID, work, timeout=120, resume=True)
    assert as_it_was["status"] == "passed" and not as_it_was["ran"]
    assert (folder / rehearse.STEPS_FILE).read_text() == runs  # finished: nothing run again
    kept = tmp_path / "r.json"  # and its record in the rehearsal's JSON stays as it was (its code version)
    rehearse._write_json(kept, {EID: {**again, "code_version": "the commit it ran at", "command": "its command"}})
    rehearse.run(EID, kept, None, 120, keep=work, progress=lambda line: None, resume=True)
    assert rehearse.load_records(kept)[EID]["code_version"] == "the commit it ran at"


def test_resume_starts_over_before_the_first_checkpoint_and_waits_for_a_live_job(monkeypatch, tmp_path):
    work, folder = stand_in(monkeypatch, tmp_path)
    folder.mkdir(parents=True)
    out = folder / "seed0.json"
    step = {"rc": None, "hwm": 1e9, "disk": 0.0, "timed_out": False, "cpu_s": 0.0, "wall_s": 5.0}
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(out)])
    try:
        stopped(folder, [{**step, "pid": live.pid}])
        with pytest.raises(BenchError, match=f"still running .process {live.pid}"):
            rehearse.rehearse_one(EID, work, timeout=120, resume=True)
    finally:
        live.kill()
        live.wait()
    record = rehearse.rehearse_one(EID, work, timeout=120, resume=True)  # no checkpoint: from the fault on
    assert record["status"] == "passed", record
    assert [s["rc"] for s in json.loads((folder / rehearse.STEPS_FILE).read_text())] == [None, 1, 0]
    (folder / rehearse.STEPS_FILE).write_text("{}")
    with pytest.raises(BenchError, match=f"{folder / rehearse.STEPS_FILE}: not a rehearsal's record"):
        rehearse.rehearse_one(EID, work, timeout=120, resume=True)


def test_a_running_process_is_recorded_while_it_runs(monkeypatch, tmp_path):
    """What a rehearsal stopped part-way leaves: the running process's step so far, rewritten as it runs."""
    monkeypatch.setattr(rehearse, "SAVE_STEP_EVERY_S", 0.2)
    seen = []
    argv = [sys.executable, "-c", "import time; time.sleep(1.5)"]
    step = rehearse._child(argv, {}, tmp_path / "log", 60, running=seen.append)
    assert step["rc"] == 0 and "pid" not in step
    assert seen and all(s["rc"] is None and s["pid"] > 0 and s["cpu_s"] == 0.0 for s in seen), seen


def test_the_committed_report_is_made_from_the_committed_records():
    """reports/rehearsal.md is `bench rehearse`'s Markdown of reports/rehearsal.json, nothing typed in: after merging
    records, regenerate it (`rehearse.markdown(rehearse.load_records(path))`)."""
    from pathlib import Path

    from bench.run.targets import targets

    reports = Path(__file__).resolve().parent.parent / "reports"
    records = rehearse.load_records(reports / "rehearsal.json")
    assert records and set(records) <= set(targets(rehearse.PROFILE))  # every record an experiment of today's
    assert (reports / "rehearsal.md").read_text() == rehearse.markdown(records)


def test_repredict_sets_this_models_prediction_beside_the_measured_peak(tmp_path):
    """`bench rehearse --repredict`: nothing run, each record's host-peak prediction made again by this checkout's
    model beside the unchanged measurement, the code version that predicted it named in the record and the report."""
    path, report = tmp_path / "r.json", tmp_path / "r.md"
    old = {
        "experiment": EID,
        "status": "passed",
        "reason": "",
        "measured_host_bytes": 1.2e9,
        "predicted_host_bytes": 1.0,
        "ratio": 1.2e9,
        "host_rss_start_mb": 800.0,
        "code_version": "the commit it ran at",
        "command": f"bench rehearse --only '{EID}'",
        "seconds": 3.0,
        "batch_size": 128,
        "train_samples": 256,
        "test_samples": 512,
    }
    rehearse._write_json(path, {EID: old})
    assert rehearse.repredict(path, report).startswith("1 record(s) predicted again at ")
    new = rehearse.load_records(path)[EID]
    expected = rehearse.predicted(EID, 800.0 * 2**20)["host_bytes"]
    assert new["predicted_host_bytes"] == expected and new["ratio"] == pytest.approx(1.2e9 / expected)
    assert new["measured_host_bytes"] == 1.2e9 and new["code_version"] == "the commit it ran at" and new["predicted_at"]
    assert f"Predictions made again by the resource model at: {new['predicted_at']}" in report.read_text()
    with pytest.raises(BenchError, match="no rehearsal records"):
        rehearse.repredict(tmp_path / "none.json", None)
