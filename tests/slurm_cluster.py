"""A single-node SLURM cluster on this machine, for the SLURM executor test: Debian's slurm-wlm and munge,
installed with apt-get when missing (root), `/etc/slurm/slurm.conf` written for this host (only when absent or
written by us before), then munged, slurmctld and slurmd started in the background unless already running.

Only what a plain container allows: no cgroups (proctrack/linuxproc, task/none), no accounting database (jobs
are followed with squeue; MinJobAge keeps finished jobs visible for 300 s), one partition `debug` with this
machine's memory and at least SLOTS CPUs (more than a 2-core machine has: slurmd takes the configured count,
SlurmdParameters=config_overrides), so that 16 one-CPU jobs run at once, as on a real cluster's nodes.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

MARK = "# written by layerwise-bench tests/slurm_cluster.py"
CONF = Path("/etc/slurm/slurm.conf")
STATE = Path("/var/tmp/bench-slurm")
SLOTS = 16


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def install():
    if all(shutil.which(t) for t in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")):
        return
    if os.geteuid() != 0:
        raise RuntimeError("SLURM is not installed and installing it needs root (apt-get install slurm-wlm munge)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for _attempt in range(3):
        proc = _run(["apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm", "munge"], env=env, timeout=900)
        if proc.returncode == 0:
            return
        _run(["apt-get", "update"], env=env, timeout=600)
    raise RuntimeError(f"apt-get install slurm-wlm munge failed: {proc.stderr[-2000:]}")


def write_conf() -> bool:
    """Write this host's configuration; True when it changed (running daemons must restart to read it)."""
    host = socket.gethostname()
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    text = "\n".join(
        [
            MARK,
            "ClusterName=bench",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"StateSaveLocation={STATE}/state",
            f"SlurmdSpoolDir={STATE}/spool",
            f"SlurmctldPidFile={STATE}/slurmctld.pid",
            f"SlurmdPidFile={STATE}/slurmd.pid",
            f"SlurmctldLogFile={STATE}/slurmctld.log",
            f"SlurmdLogFile={STATE}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "ReturnToService=2",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MinJobAge=300",
            "SlurmdParameters=config_overrides",
            f"NodeName={host} CPUs={max(SLOTS, os.cpu_count())} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )
    if CONF.exists() and (MARK not in CONF.read_text() or CONF.read_text() == text):
        return False  # a real cluster's configuration (use it as it is), or ours already
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(text)
    return True


def _running(name: str) -> bool:
    return _run(["pgrep", "-x", name]).returncode == 0


def start(timeout: float = 60.0) -> float:
    """Bring the cluster up; the seconds it took (0 when it was already up)."""
    t0 = time.monotonic()
    install()
    if write_conf():
        for daemon in ("slurmd", "slurmctld"):
            _run(["pkill", "-x", daemon])
        while _running("slurmd") or _running("slurmctld"):
            time.sleep(0.2)  # polling until the old daemons have exited: pkill offers no event to wait on
    for d in ("state", "spool"):
        (STATE / d).mkdir(parents=True, exist_ok=True)
    if not _running("munged"):
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
        if not Path("/etc/munge/munge.key").exists():
            _run(["mungekey", "--create"], check=True)
        _run(["munged", "--force"], check=True)  # as root: this machine is the whole cluster
    if not _running("slurmctld"):
        _run(["slurmctld", "-c"], check=True)
    if not _running("slurmd"):
        _run(["slurmd"], check=True)
    while time.monotonic() - t0 < timeout:
        state = _run(["sinfo", "-h", "-o", "%T"]).stdout.strip()
        if state in ("idle", "mixed", "allocated"):
            return time.monotonic() - t0
        time.sleep(0.2)  # polling sinfo: SLURM offers no event to wait on
    raise RuntimeError(f"SLURM did not come up in {timeout:.0f} s (sinfo: {state!r}; logs in {STATE})")
