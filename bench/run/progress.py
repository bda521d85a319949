"""What a run in progress says about itself, for a person: its start line, one line per epoch, and a small progress
file that `bench status` reads (bench/run/status.py), with the plan's estimate where there is one.

The progress file is `.seed<k>.progress.json` beside the run's result file (hidden, as the lock file, so that no
glob of result files `seed*.json` sees it), rewritten atomically (a temporary name, then a rename) when the run
starts, after every epoch and when it ends: state starting | running | finished | diverged | failed | interrupted,
the process (host, pid), the epoch done out of how many, the last epoch's metrics, an ETA in seconds as of the
`updated` time (measured from the epochs trained so far, else the plan's estimate), and the plan it read. No daemon:
a process that dies without a word (SIGKILL, out of memory) leaves `running` with a pid that no longer lives, which
`bench status` reports as stopped.
"""

import json
import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

PLAN_ENV = "BENCH_PLAN"  # a `bench plan --write` JSON: the workflow exports its config plan= as this


def progress_path(out: Path) -> Path:
    """seed<k>.json -> .seed<k>.progress.json, beside it."""
    out = Path(out)
    return out.with_name(f".{out.stem}.progress.json")


def hms(seconds: float) -> str:
    """0:02:05 (hours unbounded)."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def read_plan(path) -> dict:
    """A plan's jobs, experiment -> its estimate (seconds per seed); empty when the file is absent or unreadable (an
    estimate is never worth failing a run for)."""
    if not path:
        return {}
    try:
        jobs = json.loads(Path(path).read_text(encoding="utf-8"))["jobs"]
        return {j["experiment"]: j for j in jobs if isinstance(j, dict) and "experiment" in j}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def plan_file(given=None) -> str | None:
    """The plan to read: the one given, else $BENCH_PLAN; None when neither names an existing file."""
    path = given or os.environ.get(PLAN_ENV)
    return str(Path(path).resolve()) if path and Path(path).is_file() else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunProgress:
    """One run's start line, epoch lines and progress file. Lines go to stderr through tqdm.write, so that they stay
    above a terminal's progress bars (which are shown only in a terminal); a job log gets the same lines."""

    METRICS = ("train_loss", "train_accuracy", "test_accuracy", "test_loss", "si")

    def __init__(self, out: Path, experiment: str, seed: int, profile: str, plan: str | None = None):
        self.path = progress_path(out)
        self.name = f"{experiment} seed {seed}"
        self.plan = plan_file(plan)
        self.plan_seconds = read_plan(self.plan).get(experiment, {}).get("seconds")
        self.total = None  # epochs the run logs in all
        self.done = 0  # epochs done when this process started (a resume)
        self.epoch = 0
        self.start = time.perf_counter()
        self.state = {
            "experiment": experiment,
            "seed": seed,
            "profile": profile,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now_iso(),
            "state": "starting",
            "epoch": 0,
            "epochs": None,
            "resumed_from_epoch": 0,
            "eta_s": None,
            "eta_source": None,
            "plan": self.plan,
            "plan_seconds": self.plan_seconds,
            "metrics": {},
        }
        self.write()

    @staticmethod
    def say(line: str):
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
        sys.stderr.flush()

    def write(self, **changes):
        """Update the progress file (atomically); a file that cannot be written never fails the run."""
        from bench.run.results import write_json_atomic

        self.state.update(changes, updated=now_iso())
        try:
            write_json_atomic(self.path, self.state)
        except OSError:
            pass

    def plan_eta(self) -> float | None:
        """The plan's seconds for the epochs still to run, or None without a plan (or an epoch count)."""
        if not self.plan_seconds:
            return None
        if not self.total:
            return float(self.plan_seconds)
        return self.plan_seconds * max(0, self.total - self.epoch) / self.total

    def started(self, device: str, data: dict, total: int | None, done: int, params: int | None = None):
        """The start line, once the data is loaded and the model built: device, data, epochs to run, ETA."""
        self.total, self.done, self.epoch, self.start = total, done, done, time.perf_counter()
        eta = self.plan_eta()
        if total:
            epochs = f"{total - done} epochs to run" + (f" (of {total}, resumed after epoch {done})" if done else "")
        else:
            epochs = "epochs to run: unknown"
        data_text = (
            f"{data.get('dataset')} loaded ({data.get('train_samples')} train / {data.get('test_samples')} "
            f"test, {data.get('source')})"
        )
        eta_text = (
            f"ETA {hms(eta)} by the plan ({self.plan})"
            if eta is not None
            else "no ETA until an epoch ends (no plan: bench plan --write F, then --plan F or $BENCH_PLAN)"
        )
        model = f", {params:,} parameters" if params else ""
        self.say(f"{self.name} [{self.state['profile']}]: on {device}, {data_text}{model}; {epochs}; {eta_text}")
        self.write(
            state="running",
            device=device,
            epochs=total,
            epoch=done,
            resumed_from_epoch=done,
            eta_s=eta,
            eta_source="plan" if eta is not None else None,
        )

    def epoch_line(self, record: dict) -> str:
        """epoch k/n, stage, losses, accuracies, SI, the epoch's time and an ETA (measured, else the plan's)."""
        epoch = int(record["epoch"])
        self.epoch = epoch
        parts = [f"{self.name}: epoch {epoch}" + (f"/{self.total}" if self.total else "")]
        if "stage" in record:
            parts.append(f"stage {int(record['stage'])}")
        keys = (
            ("train_loss", "train loss {:.4g}"),
            ("train_accuracy", "train acc {:.2f} %"),
            ("test_accuracy", "test acc {:.2f} %"),
            ("si", "SI {:.3f}"),
        )
        parts += [fmt.format(record[k]) for k, fmt in keys if isinstance(record.get(k), (int, float))]
        if isinstance(record.get("epoch_time_s"), (int, float)):
            parts.append(f"{record['epoch_time_s']:.1f} s")
        eta, source = self.eta()
        if eta is not None and (not self.total or epoch < self.total):
            parts.append(f"ETA {hms(eta)}" + (" (plan)" if source == "plan" else ""))
        metrics = {k: record[k] for k in self.METRICS if isinstance(record.get(k), (int, float))}
        self.write(
            state="running",
            epoch=epoch,
            eta_s=eta,
            eta_source=source,
            metrics=metrics,
            **({"stage": int(record["stage"])} if "stage" in record else {}),
        )
        return ", ".join(parts)

    def eta(self) -> tuple[float | None, str | None]:
        ran = self.epoch - self.done
        if self.total and ran > 0:
            return (time.perf_counter() - self.start) / ran * max(0, self.total - self.epoch), "measured"
        eta = self.plan_eta()
        return (eta, "plan") if eta is not None else (None, None)

    def ended(self, state: str, error: str | None = None):
        self.write(
            state=state,
            eta_s=0.0 if state == "finished" else None,
            ended=now_iso(),
            **({"error": error} if error else {}),
        )
