"""A warm worker: one process that has imported torch, MLflow and the suite once, and forks a child per job.

A `bench run` starts in ~5 s of imports (torch, torchvision through ptflops, MLflow's SQLAlchemy store and
its ORM mappers, torch's lazily imported dynamo) while a smoke-profile training run takes well under a
second, so a DAG of hundreds of small jobs spends most of its time importing. The workflow starts a worker
when it runs jobs on this machine (Snakefile `onstart`), and exports its socket path as $BENCH_WORKER; a
`bench run|measure` that finds the socket hands its argv, working directory, environment and its own
stdin/stdout/stderr file descriptors to the worker and waits for the exit code (a child killed by a signal
kills its client with the same signal, as if the job had run in it). The forked child is an
ordinary `bench` process in every other respect: its own seeds, threads, MLflow run and result file.

No worker, a dead one, or one that refuses: the command runs in its own process as before, so a job never
depends on the worker. A client killed by Snakemake closes its connection and the worker kills the child.
The parent never runs a torch operation or opens a database (fork after either is unsafe), and exits
when Snakemake does, or after `idle_timeout` seconds without a job.
"""

import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

COMMANDS = {"run", "measure"}  # what the worker runs; everything else stays in-process
ENV = "BENCH_WORKER"


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


# ---------------------------------------------------------------------------------------------- client


def forward(argv: list[str]) -> int | None:
    """Run `bench <argv>` in the worker named by $BENCH_WORKER; None when there is none to use."""
    path = os.environ.get(ENV)
    if not path or not argv or argv[0] not in COMMANDS or not os.path.exists(path):
        return None
    payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        socket.send_fds(conn, [struct.pack("!I", len(payload))], [0, 1, 2])
        conn.sendall(payload)
    except OSError as err:
        print(f"bench: worker at {path} unavailable ({err}); running in this process", file=sys.stderr)
        return None
    try:
        reply = _recv_exact(conn, 4)
    except (OSError, ConnectionError):
        print("bench: the worker went away during the job", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM (bench.cli.main's handler) while the job runs
        return _interrupted(conn, err)
    finally:
        conn.close()
    code = struct.unpack("!i", reply)[0]
    if code < 0:  # the job died of signal -code: so does this process, as the job's own process would have
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # the two whose handler cannot be changed
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code  # a signal that does not end a process (none the jobs die of)
    return code


def _interrupted(conn: socket.socket, err: KeyboardInterrupt, wait_s: float = 60.0) -> int:
    """The client was interrupted: the job is told as its own process would be (closing our side of the connection
    makes the worker send the child SIGTERM), and says `bench: interrupted` itself, once, in the job's log, after its
    cleanup (its MLflow run KILLED); this waits for it, up to `wait_s`, deaf to further signals meanwhile, and
    returns 130 for Ctrl-C, 143 for SIGTERM. It says so itself only when the job did not answer."""
    code = 128 + int(str(err).split()[1]) if str(err).startswith("signal ") else 130
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(wait_s)
        if struct.unpack("!i", _recv_exact(conn, 4))[0] < 0:  # killed before it could say anything
            print("bench: interrupted", file=sys.stderr, flush=True)
    except (OSError, ConnectionError):
        print("bench: interrupted", file=sys.stderr, flush=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code


# ---------------------------------------------------------------------------------------------- server

# What a job imports: torch, torchvision (through ptflops), torch's lazily imported dynamo (the optimizers import it
# on their first step), MLflow's database layer, and the suite.
WARM_MODULES = [
    "torch",
    "torch._dynamo",
    "torchvision",
    "ptflops",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "bench.data",
    "bench.models",
    "bench.methods.training",
    "bench.run.deterministic",
    "bench.run.measure",
    "bench.run.runner",
    "bench.run.track",
]


def warm_up():
    """Import what a job imports, without running anything (no torch op, no database connection)."""
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)
    import sqlalchemy.orm

    sqlalchemy.orm.configure_mappers()  # MLflow's ORM models: 0.5 s per process otherwise
    from bench import methods

    for module in methods.IMPLEMENTED.values():
        importlib.import_module(module)
    # The data every job reads first, parsed once here (~0.5 s a job otherwise): the claims registry, the grids
    # and their companions, the profiles. A job forked from this worker sees them as they were when the worker
    # started, as it runs the code imported then; Snakemake, which starts the worker, read them at the same time.
    from bench import experiments as ex
    from bench.claims.registry import papers

    papers()
    ex.profiles()
    ex.experiments()


def _child(conn_fds: list[int], listener: socket.socket, open_conns: set, request: dict, command) -> None:
    """In the forked child: become the client's `bench` process, `command(argv)`. Never returns."""
    code, started = 1, False
    try:
        listener.close()
        for other in list(open_conns):
            other.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(conn_fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV, None)  # a job's own subprocesses run in-process
        sys.argv = ["bench", *request["argv"]]
        started = True
        try:
            code = command(request["argv"]) or 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt as err:  # before the command (one line) or in its own handling of one (said already)
        if not started:
            print("bench: interrupted", file=sys.stderr)
        code = 128 + int(str(err).split()[1]) if str(err).startswith("signal ") else 130
    except BaseException:  # noqa: BLE001 - report, then leave with an error code
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _supervise(conn: socket.socket, pid: int, open_conns: set, lock: threading.Lock):
    """Wait for the child; kill it if the client goes away; send the client its exit code."""
    told = False
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)  # -N: killed by signal N (the client dies of it too)
                try:
                    conn.sendall(struct.pack("!i", code))
                except OSError:
                    pass
                return
            readable, _, _ = select.select([] if told else [conn], [], [], 0.2)
            if not told and readable and not conn.recv(1):  # the client closed (Snakemake cancelled the job) or
                os.kill(pid, signal.SIGTERM)  # was interrupted: the child is told once, as its own process would be
                told = True
    finally:
        with lock:
            open_conns.discard(conn)
        conn.close()


def serve(path: str, command, idle_timeout: float = 3600.0, parent_pid: int | None = None) -> None:
    """Listen on the Unix socket `path` until the parent process exits or nothing happens for idle_timeout s; each
    job runs `command(argv)` (the command line's `main`, which started the worker) in a forked child."""
    warm_up()
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)  # only this user may hand us jobs
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    open_conns: set = set()
    lock = threading.Lock()
    last_activity = time.monotonic()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop:
            if parent_pid and not _alive(parent_pid):
                break
            if not open_conns and time.monotonic() - last_activity > idle_timeout:
                break
            readable, _, _ = select.select([listener], [], [], 1.0)
            if not readable:
                continue
            conn, _ = listener.accept()
            last_activity = time.monotonic()
            try:
                header, fds, _, _ = socket.recv_fds(conn, 4, 3)
                if not header:  # a probe (worker.start) or a client that gave up
                    conn.close()
                    continue
                if len(header) != 4 or len(fds) != 3:
                    raise ConnectionError("malformed request")
                request = json.loads(_recv_exact(conn, struct.unpack("!I", header)[0]))
                if request.get("argv", [None])[0] not in COMMANDS:
                    raise ConnectionError(f"refused command {request.get('argv')}")
            except (OSError, ConnectionError, ValueError) as err:
                print(f"bench worker: {err}", file=sys.stderr)
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            with lock:
                pid = os.fork()
                if pid == 0:
                    _child(fds, listener, open_conns | {conn}, request, command)
                open_conns.add(conn)
            for fd in fds:
                os.close(fd)
            threading.Thread(target=_supervise, args=(conn, pid, open_conns, lock), daemon=True).start()
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(path: str, *, parent_pid: int | None = None, timeout: float = 120.0, log: str | None = None):
    """Start a detached worker on `path` and wait until it accepts connections; returns the Popen."""
    import subprocess

    if os.path.exists(path):
        os.unlink(path)
    cmd = [sys.executable, "-m", "bench", "worker", "--socket", path]
    if parent_pid:
        cmd += ["--parent-pid", str(parent_pid)]
    out = open(log, "ab") if log else subprocess.DEVNULL
    if log:  # appended by every workflow run, after a separator line, as the jobs' logs
        out.write(
            f"===== bench worker, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, pid of its parent "
            f"{parent_pid or os.getpid()} =====\n".encode()
        )
        out.flush()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"bench worker exited with {proc.returncode} before listening" + (f"; see {log}" if log else "")
            )
        if os.path.exists(path):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(path)
                return proc
            except OSError:
                pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"bench worker did not listen on {path} within {timeout:.0f} s")
