"""`bench status`: what a profile's runs are doing, read from the files they write (no daemon, nothing to start).

A job is, in this order: running (its progress file, bench/run/progress.py, says starting or running and its
process lives: same host, pid alive; on another host, taken at its word), finished (a FINISHED or DIVERGED result
file), failed (a FAILED result file: failed for good; or a progress file that says failed: an attempt the workflow
may retry), stopped (a progress file that says interrupted, or running with its process gone: killed; the next run
resumes from its checkpoint), or to run (nothing yet). The jobs counted are the profile's targets x its seeds, as the
workflow's (`--only`, `--seeds` as its only=, seeds=). What remains is estimated by the plan (`bench plan --write`):
its seconds for every job not finished, a running job's ETA instead of its estimate; without a plan, by the finished
runs' mean wall time.
"""

import fnmatch
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from bench import BenchError
from bench import experiments as ex
from bench.run.progress import hms, plan_file, progress_path, read_plan
from bench.run.results import run_path
from bench.run.targets import targets

SHOWN = 20  # failed or stopped jobs listed by name; the rest counted


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(progress: dict) -> bool:
    if progress.get("host") != socket.gethostname():
        return True  # another machine's job (a cluster): its own word
    try:
        os.kill(int(progress["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


def _age_s(stamp: str | None) -> float:
    try:
        return max(0.0, time.time() - datetime.fromisoformat(stamp).timestamp())
    except (TypeError, ValueError):
        return 0.0


def job_state(out: Path) -> tuple[str, dict]:
    """(running | finished | failed | stopped | to run, what the state is read from) for one result path."""
    progress = _read(progress_path(out)) or {}
    if progress.get("state") in ("starting", "running") and _alive(progress):
        return "running", progress
    result = _read(out) if out.exists() else None
    if result is not None and result.get("status") in ("FINISHED", "DIVERGED"):
        return "finished", result
    if result is not None and result.get("status") == "FAILED":
        return "failed", result
    if progress.get("state") == "failed":
        return "failed", progress
    if progress.get("state") in ("starting", "running", "interrupted"):
        return "stopped", progress
    return "to run", {}


def collect(profile: str, results="results", only: str = "", seeds=None) -> dict:
    """Every counted job's state, and the running ones outside them (a `bench run` by hand)."""
    ex.profile_settings(profile)
    if not Path(results).is_dir():
        raise BenchError(f"{results}: no such results folder (bench status reads the files the runs write there)")
    experiments = targets(profile)
    if only:
        patterns = [p.strip() for p in only.split(",") if p.strip()]
        experiments = [e for e in experiments if any(fnmatch.fnmatchcase(e, p) for p in patterns)]
        if not experiments:
            raise BenchError(f"--only {only!r} matches no experiment of the {profile} profile")
    if isinstance(seeds, str) and seeds.strip().isdigit():
        seeds = int(seeds)  # a count, as the workflow's seeds=3 (Snakemake reads it as a number)
    seed_list = ex.seeds(profile, seeds or None)
    jobs = {}
    for eid in experiments:
        for seed in seed_list:
            jobs[(eid, seed)] = job_state(run_path(profile, eid, seed, results))
    others = {}  # running, not counted: another seed or experiment than the workflow's (a `bench run` by hand)
    for path in sorted((Path(results) / profile / "runs").glob("*/.seed*.progress.json")):
        progress = _read(path) or {}
        key = (str(progress.get("experiment")), progress.get("seed"))
        if key not in jobs and progress.get("state") in ("starting", "running") and _alive(progress):
            others[key] = progress
    return {
        "profile": profile,
        "results": str(results),
        "experiments": len(experiments),
        "seeds": seed_list,
        "jobs": jobs,
        "others": others,
    }


def _running_line(eid: str, seed: int, p: dict) -> str:
    if p.get("state") == "starting":
        what = "starting (loading data, building the model)"
    else:
        epochs = p.get("epochs")
        what = f"epoch {p.get('epoch', 0)}" + (f"/{epochs}" if epochs else "")
        if "stage" in p:
            what += f", stage {p['stage']}"
        m = p.get("metrics") or {}
        if isinstance(m.get("train_loss"), (int, float)):
            what += f", train loss {m['train_loss']:.4g}"
        if isinstance(m.get("test_accuracy"), (int, float)):
            what += f", test acc {m['test_accuracy']:.2f} %"
    eta = p.get("eta_s")
    if isinstance(eta, (int, float)):
        left = max(0.0, eta - _age_s(p.get("updated")))
        what += f", ETA {hms(left)}" + (" (plan)" if p.get("eta_source") == "plan" else "")
    else:
        what += ", ETA: after its first epoch"
    where = f"pid {p.get('pid')}" + (f" on {p.get('host')}" if p.get("host") != socket.gethostname() else "")
    return f"  {eid} seed {seed}: {what} ({where}, updated {hms(_age_s(p.get('updated')))} ago)"


def describe(found: dict, plan: str | None = None) -> str:
    profile, jobs = found["profile"], found["jobs"]
    counted = jobs
    by_state: dict = {}
    for key, (state, data) in counted.items():
        by_state.setdefault(state, []).append((key, data))
    n = {s: len(by_state.get(s, [])) for s in ("running", "finished", "failed", "stopped", "to run")}
    diverged = sum(1 for _, r in by_state.get("finished", []) if r.get("status") == "DIVERGED")
    seeds = found["seeds"]
    lines = [
        f"{profile}: {n['running']} running, {n['finished']} finished"
        + (f" ({diverged} diverged)" if diverged else "")
        + f", {n['failed']} failed, {n['stopped']} stopped, {n['to run']} to run "
        f"({_n(len(counted), 'job')}: {_n(found['experiments'], 'experiment')} x {_n(len(seeds), 'seed')}, "
        f"under {Path(found['results']) / profile})"
    ]
    if by_state.get("running"):
        lines.append("running:")
        lines += [_running_line(eid, seed, p) for (eid, seed), p in sorted(by_state["running"], key=str)]
    if found["others"]:
        lines.append("running, besides these jobs:")
        lines += [_running_line(eid, seed, p) for (eid, seed), p in sorted(found["others"].items(), key=str)]
    for state, title in (
        ("failed", "failed (a FAILED result file: for good; else an attempt that may be retried):"),
        ("stopped", "stopped (interrupted or killed; its next run resumes from its checkpoint):"),
    ):
        listed = sorted(by_state.get(state, []), key=str)
        if listed:
            lines.append(title)
            for (eid, seed), data in listed[:SHOWN]:
                lines.append(f"  {eid} seed {seed}: {_why(state, data)}")
            if len(listed) > SHOWN:
                lines.append(f"  ... and {len(listed) - SHOWN} more")
    lines.append(remaining(found, by_state, plan))
    return "\n".join(lines)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _why(state: str, data: dict) -> str:
    """A failed job's error, or how a stopped one stopped, on one line."""
    done = f"after epoch {data.get('epoch', 0)}" + (f"/{data['epochs']}" if data.get("epochs") else "")
    if state == "stopped" and data.get("state") == "interrupted":
        return f"interrupted {done}"
    if state == "stopped":
        return f"its process (pid {data.get('pid')}) ended without a word {done} (killed?)"
    why = str(data.get("error") or data.get("status") or data.get("state") or state)
    return why.splitlines()[0][:160] if why.strip() else state


def _plan_from_runs(found: dict) -> str | None:
    """The plan the runs read (their progress files name it), newest first."""
    read = [data for _, data in found["jobs"].values()] + list(found["others"].values())
    for data in sorted(read, key=lambda d: str(d.get("updated")), reverse=True):
        if data.get("plan") and Path(data["plan"]).is_file():
            return data["plan"]
    return None


def remaining(found: dict, by_state: dict, plan: str | None) -> str:
    """What remains: the plan's seconds for every job not finished (a running job's ETA instead)."""
    left = [k for s in ("running", "stopped", "to run", "failed") for k, _ in by_state.get(s, [])]
    if not left:
        return "what remains: nothing"
    running = dict(by_state.get("running", []))
    path = plan_file(plan) or _plan_from_runs(found)
    estimates = read_plan(path)
    if estimates:
        total, unplanned = 0.0, 0
        for eid, seed in left:
            p = running.get((eid, seed), {})
            if isinstance(p.get("eta_s"), (int, float)):
                total += max(0.0, p["eta_s"] - _age_s(p.get("updated")))
            elif estimates.get(eid, {}).get("seconds") is not None:
                total += estimates[eid]["seconds"]
            else:
                unplanned += 1
        text = f"what remains: {hms(total)} of job time by the plan ({path}) for {_n(len(left) - unplanned, 'job')}"
        if unplanned:
            text += f", {unplanned} not in the plan"
    else:
        walls = [r.get("metrics", {}).get("wall_time_s") for _, r in by_state.get("finished", [])]
        walls = [w for w in walls if isinstance(w, (int, float))]
        if not walls:
            return (
                f"what remains: {_n(len(left), 'job')}; no plan for an estimate (bench plan --profile "
                f"{found['profile']} --write F, then --plan F, or the workflow's plan=F)"
            )
        mean = sum(walls) / len(walls)
        total = mean * len(left)
        text = (
            f"what remains: ~{hms(total)} of job time for {_n(len(left), 'job')} at the finished runs' mean of "
            f"{mean:.1f} s (no plan: bench plan --write F, then --plan F)"
        )
    if len(running) > 1:
        text += f"; ~{hms(total / len(running))} with {len(running)} jobs at once"
    return text


def watch(
    profile: str, results="results", plan: str | None = None, only: str = "", seeds=None, every: float | None = None
):
    """Print the status once, or every `every` seconds until Ctrl-C (in a terminal, in place of the last one)."""
    while True:
        text = describe(collect(profile, results, only, seeds), plan)
        if every is not None and sys.stdout.isatty():
            sys.stdout.write("\033[H\033[J")
        print(text, flush=True)
        if every is None:
            return
        time.sleep(every)
