"""What keeps a run alone and stoppable: one process per result file (`seed_lock`), and SIGTERM ending a run as
Ctrl-C does (`sigterm_interrupts`), so that its MLflow run ends KILLED and its checkpoint stays for a resume."""

import fcntl
import os
import signal
import socket
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench import BenchError


@contextmanager
def seed_lock(out: Path):
    """Hold an exclusive, non-blocking flock on `.<result name>.lock` beside the result file for the run's life
    (the kernel frees it when the process dies, SIGKILL included); a second run of the same file is refused with
    who holds it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    f = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise BenchError(f"{out}: already being trained by {holder}; wait for it to end or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(
            f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        )
        f.flush()
        yield
    finally:
        f.close()


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_interrupts():
    """Inside the block SIGTERM raises KeyboardInterrupt, as Ctrl-C does; the previous handler comes back on exit.
    Only the main thread can install a handler: elsewhere the block runs with the process's handler."""
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None
    try:
        yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_handler)
