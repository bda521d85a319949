"""A headless-Chromium screenshot of the MLflow UI's experiment page, for the README (what users will browse).

    python workflows/scripts/screenshot_mlflow.py --store sqlite:///$PWD/mlflow.db \
        --experiment layerwise-bench/smoke/cruciata --out reports/figures/mlflow_experiment.png

Starts `bench ui` on a free 127.0.0.1 port over the store, waits for it, asks Chromium (Debian's `chromium`, or
$CHROMIUM) for a PNG of the experiment's runs table, and stops the server.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the MLflow server did not come up at {url}")
            time.sleep(1)


def experiment_id(port: int, name: str) -> str:
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={urllib.parse.quote(name)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())["experiment"]["experiment_id"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="tracking URI of a finished store")
    p.add_argument("--experiment", default="layerwise-bench/smoke/cruciata")
    p.add_argument("--out", type=Path, default=Path("reports/figures/mlflow_experiment.png"))
    p.add_argument("--size", default="1600,900")
    args = p.parse_args()
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium found: apt-get install chromium (or set $CHROMIUM)")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--port", str(port), "--store", args.store],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server)
        eid = experiment_id(port, args.experiment)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={args.size}", "--virtual-time-budget=15000",
                        f"--screenshot={args.out.resolve()}", f"http://127.0.0.1:{port}/#/experiments/{eid}/runs"],
                       check=True, capture_output=True, timeout=180)
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
