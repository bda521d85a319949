"""`bench rehearse`: every paper experiment run for a few batches at its paper shapes, before any GPU time is spent.

A rehearsal is a real `bench run` under the `rehearsal` profile (bench/profiles.yaml): the paper's full width,
batch and input size, synthetic stand-ins of the real shape, two training batches an epoch, two epochs (one per
layer or stage), one evaluation batch, and every size-dependent budget (prefix cache, Learn & Drop's store, the SI
pair search) scaled by the rehearsal's share of the training split, so that it holds, spills or streams as the
full run does. Each job runs in two processes, as a killed and resumed job would:

1. the run is stopped by an injected fault after its first epoch's batches (its first checkpoint is on disk);
2. the same command again: it must resume from that checkpoint, train the rest, evaluate and write its result.

Per job it reports passed or failed (the one-line reason), the host peak it measured (the process's own high-water
mark, VmHWM) against what bench.cost.resources predicts for the rehearsal, the bytes it wrote to disk (checkpoint,
stores, MLflow's store; the kernel's count) and its seconds, beside the full paper job's predicted device and host
peaks on the papers' node. A job whose predicted peak exceeds this machine's memory is skipped with that reason.
The records merge into a JSON file (one per experiment, the latest kept), from which the Markdown report is made,
so that a rehearsal of some jobs never drops the others.

A rehearsal longer than a machine stays up (DBpedia's VD-CNN-29 SI takes hours on two cores) goes on where it
stopped: with `--keep DIR`, each job's folder holds `steps.json`, what each of its processes did, rewritten while
they run; `--resume` starts another process on the job's last checkpoint where the rehearsal was stopped part-way
(a process that did not end by itself is recorded with no exit status), and reports a job that finished as it was.
"""

import fnmatch
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import BenchError, methods
from bench import experiments as ex

PROFILE = "rehearsal"
RATIO_OK = (0.65, 1.5)  # measured / predicted host peak that counts as a prediction that holds


def jobs(only: str | None) -> list[str]:
    """The experiments to rehearse: those of the rehearsed profile matching `only`, else one per (paper, model,
    method), the plain experiment (no variant) where there is one."""
    from bench.run.targets import targets

    ids = targets(PROFILE)
    if only:
        chosen = [e for e in ids if fnmatch.fnmatchcase(e, only)]
        if not chosen:
            raise BenchError(f"--only {only!r}: no experiment of the {rehearsed()} profile matches")
        return chosen
    first: dict = {}
    for eid in ids:
        exp = ex.get(eid)
        key = (exp.paper, exp.model, exp.method)
        if key not in first or (ex.get(first[key]).variant and not exp.variant):
            first[key] = eid
    return list(first.values())


def rehearsed() -> str:
    return ex.profile_settings(PROFILE)["rehearses"]


def available_bytes() -> float:
    import psutil

    return float(psutil.virtual_memory().available)


def _hwm_bytes(pid: int) -> float:
    """A live process's resident high-water mark (VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


STEPS_FILE = "steps.json"  # in a job's folder: what each of its processes did (`_child`), rewritten while they run
SAVE_STEP_EVERY_S = 30.0


def _child(argv: list[str], env: dict, log: Path, timeout: float, running=lambda step: None) -> dict:
    """Run `argv`, its output to `log`; exit status, high-water mark (polled), disk bytes written and CPU seconds
    (the kernel's rusage of the child), wall seconds. While it runs, `running` gets the step so far every
    SAVE_STEP_EVERY_S (rc None, its pid; disk and CPU seconds unknown until it ends: 0)."""
    start = last_saved = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        hwm, timed_out = 0.0, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, _hwm_bytes(proc.pid))
            now = time.perf_counter()
            if now - start > timeout:
                proc.kill()
                timed_out = True
            if now - last_saved > SAVE_STEP_EVERY_S:
                running(_step(None, hwm, 0.0, timed_out, 0.0, now - start, proc.pid))
                last_saved = now
            time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu_s = usage.ru_utime + usage.ru_stime
    return _step(proc.returncode, hwm, usage.ru_oublock * 512.0, timed_out, cpu_s, time.perf_counter() - start)


def _step(rc, hwm: float, disk: float, timed_out: bool, cpu_s: float, wall_s: float, pid: int | None = None) -> dict:
    step = {"rc": rc, "hwm": hwm, "disk": disk, "timed_out": timed_out, "cpu_s": cpu_s, "wall_s": wall_s}
    return step if pid is None else {**step, "pid": pid}


def _last_line(log: Path, *needles: str) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for needle in needles:
        hits = [ln for ln in lines if needle in ln]
        if hits:
            return hits[-1]
    return lines[-1] if lines else "no output"


def predicted(eid: str, process_bytes: float | None = None) -> dict:
    """The rehearsal's predicted host peak on this CPU, and the full job's device and host peaks on the papers'
    node (bench.cost.resources)."""
    from bench.cost.resources import PAPERS_NODE, PROCESS_BYTES, Node, job_resources

    exp = ex.get(eid)
    here = job_resources(
        exp, PROFILE, Node(0.0, available_bytes()), cpu=True, process_bytes=process_bytes or PROCESS_BYTES
    )
    full = job_resources(exp, rehearsed(), PAPERS_NODE)
    return {
        "host_bytes": here["host_bytes"],
        "host_parts": here["host"],
        "full_device_bytes": full["device_bytes"],
        "full_host_bytes": full["host_bytes"],
        "full_disk_bytes": full["disk_bytes"],
    }


def pair_search_mb(eid: str) -> float | None:
    """The SI pair search's budget (MiB) for this job's rehearsal, or None (no pair search over the data): where
    the full job streams its largest layer on the papers' node, the largest budget with which the rehearsal streams
    it too (the fewest panels); where it holds them, the full job's own budget (the rehearsal holds them too)."""
    from bench.cost.method_costs import EVAL_BATCH_SIZE, PAIR_SEARCH_MAX_MB
    from bench.cost.resources import PAPERS_NODE, shapes
    from bench.methods.si import search_plan

    exp = ex.get(eid)
    full_cfg, cfg = ex.config(exp, rehearsed()), ex.config(exp, PROFILE)
    opts = full_cfg.get("method_options") or {}
    if not methods.plan_module(exp.method).COST.si or opts.get("neighbours", "data") not in ("data", "data_epoch"):
        return None
    from bench.claims.datasets import DATASETS

    s = shapes(full_cfg, exp.dataset)
    dims = max(s["outs"][: int(opts.get("si_layers", len(s["outs"]) - 1))])
    full_n = full_cfg["data"]["train_samples"] or DATASETS[exp.dataset].train_size
    eval_batch = full_cfg.get("eval_batch_size", EVAL_BATCH_SIZE)
    cap = float(opts.get("pair_search_max_mb", PAIR_SEARCH_MAX_MB))
    full = search_plan(
        full_n,
        dims,
        min(full_n, eval_batch),
        min(cap * 2**20, 0.5 * PAPERS_NODE.gpu_bytes),
        0.5 * PAPERS_NODE.host_bytes,
    )
    if full["mode"] != "streamed":
        return cap
    n = cfg["data"]["train_samples"]
    chunk = min(n, cfg.get("eval_batch_size", EVAL_BATCH_SIZE))
    streaming = [
        mb
        for mb in (2 ** (k / 4) for k in range(0, 80))
        if search_plan(n, dims, chunk, mb * 2**20, 0.0)["mode"] == "streamed"
    ]
    return round(max(streaming), 3) if streaming else cap


def _job_record(eid: str, cfg: dict) -> dict:
    """The record's first fields: the experiment, the date, and the rehearsal's batch, samples, input size and
    width."""
    return {
        "experiment": eid,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "batch_size": cfg["batch_size"],
        "train_samples": cfg["data"]["train_samples"],
        "test_samples": cfg["data"]["test_samples"],
        "input_size": cfg.get("input_size"),
        "width_mult": cfg["model"]["width_mult"],
    }


def _skipped(record: dict, guess: dict) -> dict | None:
    """The record of a job skipped because its predicted host peak is over 90 % of the memory available here, or
    None when it fits."""
    free = available_bytes()
    if guess["host_bytes"] > 0.9 * free:
        return {
            **record,
            "status": "skipped",
            "seconds": 0.0,
            "predicted_host_bytes": guess["host_bytes"],
            "reason": f"predicted host peak {guess['host_bytes'] / 1e9:.1f} GB > 90 % of the "
            f"{free / 1e9:.1f} GB available here",
        }
    return None


def _run_argv(eid: str, out: Path) -> list[str]:
    """The `bench run` command of the job's rehearsal, on the CPU, its result to `out`."""
    return [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--experiment",
        eid,
        "--profile",
        PROFILE,
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
    ]


def _run_env(eid: str, work: Path) -> dict:
    """The environment of the job's processes: MLflow's store in `work`, no worker, no fault, and the job's own
    pair search budget (`pair_search_mb`) where it has one."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "BENCH_WORKER": ""}
    env.pop("BENCH_FAULT", None)
    budget = pair_search_mb(eid)
    env.pop(ex.REHEARSAL_OPTIONS, None)
    if budget is not None:
        env[ex.REHEARSAL_OPTIONS] = json.dumps({ex.get(eid).method: {"pair_search_max_mb": budget}})
    return env


class Steps:
    """What a job's processes did, in order, kept in the job folder's STEPS_FILE after each process and while one
    runs (its step so far), so that a rehearsal stopped part-way can go on (`--resume`)."""

    def __init__(self, folder: Path, earlier: list[dict] | None = None):
        self.path, self.done = folder / STEPS_FILE, list(earlier or [])

    def run(self, argv: list[str], env: dict, log: Path, timeout: float) -> dict:
        step = _child(argv, env, log, timeout, lambda now: self._save([*self.done, now]))
        self.done.append(step)
        self._save(self.done)
        return step

    def _save(self, steps: list[dict]):
        _write_text(self.path, json.dumps(steps, indent=1) + "\n")


def _run_and_resume(argv: list[str], env: dict, log: Path, out: Path, timeout: float, steps: Steps) -> list[dict]:
    """The job stopped by an injected fault after its first epoch's batches, then, where it left a checkpoint,
    run again to resume from it; what each process did (`_child`), earlier ones first."""
    batches = int(ex.profile_settings(PROFILE)["train_batches"])
    first = steps.run(argv, {**env, "BENCH_FAULT": f"raise:{batches}"}, log, timeout)
    if first["rc"] != 0 and not first["timed_out"] and _checkpoint(out).exists():
        steps.run(argv, env, log, timeout)
    return steps.done


def _go_on(argv: list[str], env: dict, log: Path, out: Path, timeout: float, steps: Steps) -> list[dict]:
    """A job of a rehearsal that was stopped part-way (`--resume`): nothing more where it finished or failed;
    from the start where it stopped before its first checkpoint; else one more process, which resumes from the
    last checkpoint."""
    last, checkpoint = steps.done[-1], _checkpoint(out).exists()
    if last.get("pid") and _alive(last["pid"], out):
        raise BenchError(f"{out.parent}: its job is still running (process {last['pid']}); resume once it has ended")
    ended = last["rc"] is not None  # the last process ended by itself (a stopped one has no exit status)
    if any(s["timed_out"] for s in steps.done) or (ended and (len(steps.done) > 1 or out.exists() or not checkpoint)):
        return steps.done  # finished, or failed: nothing to go on with
    if not checkpoint:  # stopped before its first checkpoint: from the start
        return _run_and_resume(argv, env, log, out, timeout, steps)
    steps.run(argv, env, log, timeout)  # stopped part-way, or between its two processes: on from the checkpoint
    return steps.done


def _checkpoint(out: Path) -> Path:
    """The job's checkpoint beside its result file (`bench run`'s seed 0)."""
    return out.with_name("seed0.ckpt.pt")


def _prediction(guess: dict, measured: float | None) -> dict:
    """A record's fields from `predicted`'s host peak, with the ratio to the measured peak where there is one."""
    return {
        "predicted_host_bytes": guess["host_bytes"],
        "predicted_host_parts": {k: round(v) for k, v in guess["host_parts"].items()},
        "ratio": measured / guess["host_bytes"] if measured is not None and guess["host_bytes"] else None,
    }


def _alive(pid: int, out: Path) -> bool:
    """Whether process `pid` is a `bench run` writing `out` (a process the stopped rehearsal left running)."""
    try:
        return str(out) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False


def _measured_host_bytes(steps: list[dict], metrics: dict) -> float:
    """The processes' highest high-water mark, or the last process's own peak where that is higher."""
    measured = max(s["hwm"] for s in steps)
    if metrics.get("peak_host_rss_mb"):  # the last process's own figure, taken after its evaluation
        measured = max(measured, metrics["peak_host_rss_mb"] * 2**20)
    return measured


def _outcome(record: dict, steps: list[dict], result: dict | None, resumed_from: int, timeout: float, log: Path):
    """The record with its status: passed only where the job finished after resuming from its checkpoint."""
    if any(s["timed_out"] for s in steps):
        return {**record, "status": "failed", "reason": f"timed out after {timeout:.0f} s"}
    if result is None:
        return {**record, "status": "failed", "reason": _last_line(log, "Error", "error")}
    if result["status"] != "FINISHED":
        return {**record, "status": "failed", "reason": f"{result['status']}: {result.get('error', '')}"}
    if len(steps) == 1:
        return {
            **record,
            "status": "failed",
            "reason": "the run ended before its first checkpoint was followed by "
            "another batch: checkpoint and resume not exercised",
        }
    if not resumed_from:
        return {**record, "status": "failed", "reason": "the second process did not resume from the checkpoint"}
    return {**record, "status": "passed", "reason": ""}


def rehearse_one(eid: str, work: Path, timeout: float, resume: bool = False) -> dict:
    """Rehearse one experiment in `work` (its result file, checkpoint, log and MLflow store): the record. With
    `resume`, go on with the job's earlier rehearsal in `work` where there is one (`_go_on`)."""
    cfg = ex.config(ex.get(eid), PROFILE)
    record = _job_record(eid, cfg)
    guess = predicted(eid)
    record.update(
        predicted_full_device_bytes=guess["full_device_bytes"], predicted_full_host_bytes=guess["full_host_bytes"]
    )
    skipped = _skipped(record, guess)
    if skipped is not None:
        return skipped
    folder = work / eid
    folder.mkdir(parents=True, exist_ok=True)
    out, log = folder / "seed0.json", folder / "run.log"
    argv = _run_argv(eid, out)
    env = _run_env(eid, work)
    steps = _earlier_steps(folder, out, resume)
    earlier = len(steps.done)
    if earlier:
        _go_on(argv, env, log, out, timeout, steps)
    else:
        _run_and_resume(argv, env, log, out, timeout, steps)
    steps = steps.done
    record["ran"] = len(steps) > earlier  # whether a process ran now (run: a record otherwise stays as it was)
    resumed_from = 0
    seconds = sum(s["wall_s"] for s in steps)
    record.update(
        seconds=seconds, cpu_seconds=sum(s["cpu_s"] for s in steps), disk_written_bytes=sum(s["disk"] for s in steps)
    )
    result = json.loads(out.read_text()) if out.exists() else None
    metrics = (result or {}).get("metrics", {})
    if result is not None:
        resumed_from = int(result.get("resumed_from_epoch") or 0)
        start_mb = metrics.get("host_rss_start_mb")
        guess = predicted(eid, start_mb * 2**20 if start_mb else None)
    measured = _measured_host_bytes(steps, metrics)
    record.update(
        **_prediction(guess, measured),
        measured_host_bytes=measured,
        host_rss_start_mb=metrics.get("host_rss_start_mb"),
        resumed_from_epoch=resumed_from,
        pair_search_passes=metrics.get("pair_search_passes"),
    )
    return _outcome(record, steps, result, resumed_from, timeout, log)


def _earlier_steps(folder: Path, out: Path, resume: bool) -> Steps:
    """The job's earlier processes in `folder` (`resume`), none for a new rehearsal; an error where the folder holds
    an earlier rehearsal that is not to be resumed (its files are the user's, never overwritten)."""
    path = folder / STEPS_FILE
    earlier = None
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except ValueError:
            earlier = None
        if not (isinstance(earlier, list) and earlier and all(isinstance(s, dict) and "rc" in s for s in earlier)):
            raise BenchError(f"{path}: not a rehearsal's record of its processes (a JSON list of steps)")
    stale = earlier or out.exists() or _checkpoint(out).exists()
    if stale and not (resume and earlier):
        what = "--resume goes on with it" if earlier else "it has no record of its processes to resume from"
        raise BenchError(f"{folder}: holds an earlier rehearsal of this job ({what}); or remove the folder")
    return Steps(folder, earlier if resume else None)


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, no GPU used"


def load_records(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {r["experiment"]: r for r in data["records"]}
    except (ValueError, KeyError, TypeError) as err:
        raise BenchError(f"{path}: not a rehearsal record file ({err})") from None


def run(
    only: str | None,
    json_path: Path | None,
    report: Path | None,
    timeout: float,
    keep: Path | None = None,
    progress=print,
    resume: bool = False,
) -> tuple[list[dict], str]:
    """Rehearse the chosen jobs one after another; merge their records into `json_path`, write `report`. With
    `resume`, each job goes on with its earlier rehearsal in `keep` where there is one."""
    from bench.run.measure import code_version

    chosen = jobs(only)
    records = load_records(json_path)
    if resume and keep is None:
        raise BenchError("--resume needs --keep: the folder of the rehearsal to go on with")
    command = "bench rehearse" + (f" --only '{only}'" if only else "") + (" --resume" if resume else "")
    started = time.perf_counter()
    done = []
    with tempfile.TemporaryDirectory(prefix="bench-rehearse-") as tmp:
        work = keep or Path(tmp)
        for k, eid in enumerate(chosen, 1):
            rec = rehearse_one(eid, work, timeout, resume)
            if rec.pop("ran", True) or eid not in records:
                rec.update(code_version=code_version(), command=command)
            else:  # resumed, but it had finished or failed: its record as it was (its code version, its command)
                rec = records[eid]
            done.append(rec)
            progress(
                f"[{k}/{len(chosen)}] {eid}: {rec['status']}"
                + (f" ({rec['reason']})" if rec["reason"] else "")
                + (
                    f", host peak {rec['measured_host_bytes'] / 1e9:.2f} GB measured / "
                    f"{rec['predicted_host_bytes'] / 1e9:.2f} GB predicted"
                    if rec.get("measured_host_bytes")
                    else ""
                )
                + f", {rec['seconds']:.0f} s"
            )
            records = _merge(json_path, done, records)  # after every job: an interrupted rehearsal keeps what it did
            if report:
                _write_text(report, markdown(records))
    summary = f"{len(done)} job(s) in {time.perf_counter() - started:.0f} s: " + ", ".join(
        f"{sum(r['status'] == s for r in done)} {s}" for s in ("passed", "failed", "skipped")
    )
    return done, summary


def repredict(json_path: Path, report: Path | None) -> str:
    """The records in `json_path` with their host-peak predictions made again by this checkout's resource model
    (nothing is run: the measured peaks stay as measured, each record names the code version that predicted it,
    `predicted_at`); `report` written from them. For when the model changed after a rehearsal."""
    from bench.run.measure import code_version

    records = load_records(json_path)
    if not records:
        raise BenchError(f"{json_path}: no rehearsal records to predict again")
    version = code_version()
    for eid, rec in records.items():
        if rec["status"] == "skipped":  # no measurement to set a prediction against
            continue
        start = rec.get("host_rss_start_mb")
        guess = predicted(eid, start * 2**20 if start else None)
        measured = rec.get("measured_host_bytes")
        rec.update(
            **{k: v for k, v in _prediction(guess, measured).items() if k != "ratio" or measured},
            predicted_full_device_bytes=guess["full_device_bytes"],
            predicted_full_host_bytes=guess["full_host_bytes"],
            predicted_at=version,
        )
    _write_json(json_path, records)
    if report:
        _write_text(report, markdown(records))
    return f"{len(records)} record(s) predicted again at {version}"


def _merge(json_path: Path | None, done: list[dict], records: dict) -> dict:
    """The records in `json_path` as they are now (another rehearsal may have added some) with `done` over them,
    written back under a lock; without a file, `records` with `done` over them."""
    import fcntl

    if json_path is None:
        return {**records, **{r["experiment"]: r for r in done}}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(json_path.parent, os.O_RDONLY)  # the lock: on the folder, which the file's replacement keeps
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        merged = {**load_records(json_path), **{r["experiment"]: r for r in done}}
        _write_json(json_path, merged)
    finally:
        os.close(folder)
    return merged


def _write_json(path: Path, records: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "profile": PROFILE,
                "rehearses": rehearsed(),
                "machine": machine(),
                "records": sorted(records.values(), key=lambda r: r["experiment"]),
            },
            indent=1,
        )
        + "\n"
    )
    tmp.replace(path)


def _write_text(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _gb(size) -> str:
    return f"{size / 1e9:.2f}" if isinstance(size, (int, float)) else ""


def _records_table(rows: list[dict]) -> str:
    """One row per rehearsed experiment: status, sizes, host peaks predicted and measured, disk, seconds, resume,
    pair search passes and the full job's predicted peaks."""
    from tabulate import tabulate

    return tabulate(
        [
            [
                r["experiment"],
                r["status"] + (f": {r['reason']}" if r["reason"] else ""),
                r["batch_size"],
                r["train_samples"],
                _gb(r.get("predicted_host_bytes")),
                _gb(r.get("measured_host_bytes")),
                f"{r['ratio']:.2f}" if r.get("ratio") else "",
                _gb(r.get("disk_written_bytes")),
                f"{r['seconds']:.0f}",
                r.get("resumed_from_epoch", ""),
                r.get("pair_search_passes") or "",
                _gb(r.get("predicted_full_device_bytes")),
                _gb(r.get("predicted_full_host_bytes")),
            ]
            for r in rows
        ],
        headers=[
            "experiment",
            "status",
            "batch",
            "train samples",
            "host peak predicted (GB)",
            "measured (GB)",
            "measured / predicted",
            "disk written (GB)",
            "seconds",
            "resumed from epoch",
            "pair search passes",
            "full job: device (GB)",
            "full job: host (GB)",
        ],
        tablefmt="github",
        disable_numparse=True,
    )


def _commands(rows: list[dict]) -> str:
    """The commands that made the records: those of one job each (`--only` its experiment) counted, the others
    listed."""
    one_job = [
        r
        for r in rows
        if r.get("command") in (f"bench rehearse --only '{r['experiment']}'" + e for e in ("", " --resume"))
    ]
    others = sorted({r.get("command", "") for r in rows if r not in one_job})
    jobs = f"{len(one_job)} job" + ("s" if len(one_job) != 1 else "")
    parts = [f"`bench rehearse --only '<experiment>'` ({jobs}, one at a time)"] if one_job else []
    return "; ".join(parts + [f"`{c}`" for c in others])


def _header_lines(rows: list[dict], all_jobs: list[str], missing: list[str]) -> list[str]:
    """The report's title, what a rehearsal is, and the machine, commands, code versions, CPU time, status counts
    and combinations covered."""
    commands = _commands(rows)
    versions = sorted({r.get("code_version", "") for r in rows})
    predicted_at = sorted({r["predicted_at"] for r in rows if r.get("predicted_at")})
    counts = {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "skipped")}
    within = [r for r in rows if r.get("ratio") and r["status"] == "passed"]
    held = sum(RATIO_OK[0] <= r["ratio"] <= RATIO_OK[1] for r in within)
    machine_line = machine()
    return [
        "# Rehearsal at paper shapes",
        "",
        "Generated by `bench rehearse` (bench/cost/rehearse.py); not a result: no number here is a paper's claim.",
        f"Each row is one experiment of the `{rehearsed()}` profile run under the `{PROFILE}` profile "
        "(bench/profiles.yaml): full width, the paper's batch and input size, synthetic stand-ins of the real shape, "
        "two training batches an epoch, two epochs (layer-wise methods: one per layer or stage), one evaluation "
        "batch; the prefix cache's and Learn & Drop's store's budgets scaled by the rehearsal's share of the "
        "training split, and the SI pair search's sized per job, so that each is held, spilled or streamed as in "
        "the full run. "
        "Each job is stopped by an injected fault after its first epoch and must resume from its checkpoint in a "
        "second process. Host peaks are each process's own high-water mark (VmHWM), against "
        "bench.cost.resources' prediction for the rehearsal on a CPU; the last two columns are the full paper "
        "job's predicted peaks on the papers' node (one 24 GB GPU, 64 GB host).",
        "",
        f"- Machine: {machine_line}",
        f"- Commands: {commands}",
        f"- Code versions: {', '.join(versions)}",
        *(
            [
                f"- Predictions made again by the resource model at: {', '.join(predicted_at)} "
                "(`bench rehearse --repredict`)"
            ]
            if predicted_at
            else []
        ),
        f"- CPU time: {sum(r.get('cpu_seconds', 0.0) for r in rows) / 3600:.2f} CPU-hours, "
        f"{sum(r.get('seconds', 0.0) for r in rows) / 3600:.2f} hours of wall time over {len(rows)} jobs",
        f"- Status: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped; host peak "
        f"within {RATIO_OK[0]}-{RATIO_OK[1]} x of the prediction in {held} of {len(within)} passed jobs",
        f"- (paper, model, method) combinations of the `{rehearsed()}` profile: {len(all_jobs)}; rehearsed and passed: "
        f"{len(all_jobs) - len(missing)}; not yet: {len(missing)}",
        "",
    ]


def markdown(records: dict) -> str:
    """The rehearsal report: a header (what a rehearsal is, the machine, the commands and CPU time), the combinations
    of the rehearsed profile not yet rehearsed, and one row per rehearsed experiment."""
    rows = sorted(records.values(), key=lambda r: r["experiment"])
    all_jobs = jobs(None)
    combination = lambda eid: (ex.get(eid).paper, ex.get(eid).model, ex.get(eid).method)  # noqa: E731
    covered = {combination(r["experiment"]) for r in rows if r["status"] == "passed"}
    missing = [e for e in all_jobs if combination(e) not in covered]
    lines = _header_lines(rows, all_jobs, missing) + [_records_table(rows), ""]
    if missing:
        lines += [
            f"## Not rehearsed yet ({len(missing)})",
            "",
            "One experiment per combination, as `bench rehearse` with no --only picks them: "
            + ", ".join(f"`{e}`" for e in missing),
            "",
        ]
    return "\n".join(lines)
