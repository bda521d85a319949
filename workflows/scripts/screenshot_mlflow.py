"""Headless-Chromium screenshots of the MLflow UI as `bench ui` opens it, for the README (what users will browse).

    python workflows/scripts/screenshot_mlflow.py --store sqlite:///$PWD/mlflow.db

Starts `bench ui` on a free 127.0.0.1 port over the store, opens the link it prints for --experiment (the
experiment's runs, in the "Model training" view, with the suite's columns: bench/run/ui.py) in a new Chromium
profile (Debian's `chromium`, or $CHROMIUM; nothing set in its storage, no style changed), and writes

- reports/mlflow_runs.png: the runs list as that link opens it;
- reports/mlflow_run.png: the run's page, opened by clicking its name in that list (--run-name, else the FINISHED
  run with the longest `train_loss` history);
- reports/mlflow_run_charts.png: its "Model metrics" tab (clicked), the search box given the loss, accuracy and
  time charts (--metrics), down to the last chart.

MLflow 3.17 opens its Assistant panel by itself on a first visit from localhost; this script closes it as a user
does, with a click on the panel's close button (x), before the first screenshot (the browser keeps it closed
after). It drives Chromium over its DevTools protocol with aiohttp (an mlflow dependency), clicks with mouse events
at the element's place on the page, waits until each page has rendered (its runs or charts drawn, its text still
for 1.5 s), and stops both; a minute or two.
"""

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp

# every chart of the charts tab drawn with its data (a plotly trace), not an empty frame
CHARTS_READY = (
    "document.querySelector('.js-plotly-plot') && "
    "[...document.querySelectorAll('.js-plotly-plot')].every(plot => plot.querySelector('.trace'))"
)

# the viewport down to just below the last chart card
CHARTS_CLIP = (
    "(b => b && {x: 0, y: 0, width: innerWidth, height: Math.min(innerHeight, b + 24), scale: 1})(Math.max("
    "0, ...[...document.querySelectorAll('.react-resizable')].map(c => c.getBoundingClientRect().bottom)))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def wait_for_server(port: int, server: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the MLflow server did not come up on port {port}") from None
            time.sleep(1)


def ui_link(server: subprocess.Popen, experiment: str) -> str:
    """The link `bench ui` prints for `experiment` ('<name>: <url>' on its stdout, before the server starts)."""
    for line in server.stdout:
        name, _, url = line.strip().partition(": ")
        if name == experiment:
            return url
    raise SystemExit(f"bench ui printed no link for {experiment!r}")


def pick_run(port: int, experiment: str, run_name: str | None) -> tuple[str, dict]:
    """(experiment id, run info) of the named run, else of the FINISHED run with the most train_loss points."""
    eid = api(port, f"experiments/get-by-name?experiment_name={urllib.parse.quote(experiment)}")["experiment"]
    eid = eid["experiment_id"]
    query = f"attributes.run_name = '{run_name}'" if run_name else "attributes.status = 'FINISHED'"
    runs = [
        r["info"]
        for r in api(port, "runs/search", {"experiment_ids": [eid], "filter": query, "max_results": 1000}).get(
            "runs", []
        )
    ]
    if not runs:
        raise SystemExit(f"no {'run ' + repr(run_name) if run_name else 'FINISHED run'} in {experiment!r}")

    def epochs(info: dict) -> int:
        q = urllib.parse.urlencode({"run_id": info["run_id"], "metric_key": "train_loss"})
        return len(api(port, f"metrics/get-history?{q}").get("metrics", []))

    return eid, max(runs, key=epochs)


class Page:
    """One Chromium tab over the DevTools protocol: just the calls this script needs."""

    def __init__(self, ws):
        self.ws, self.last_id = ws, 0

    async def call(self, method: str, **params):
        self.last_id += 1
        await self.ws.send_json({"id": self.last_id, "method": method, "params": params})
        async for message in self.ws:  # events are skipped: no domain that sends them is waited on
            reply = json.loads(message.data)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
        raise RuntimeError("Chromium closed the DevTools connection")

    async def evaluate(self, expression: str):
        return (await self.call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")

    async def click(self, selector: str, what: str, timeout: float = 180.0):
        """A mouse click (press and release of the left button) at the middle of the first element the JS
        expression `selector` gives, as a user's: waits for the element to be on the page."""
        deadline = time.monotonic() + timeout
        while True:
            box = await self.evaluate(
                f"(e => e && (r => ({{x: r.x + r.width / 2, y: r.y + r.height / 2}}))"
                f"(e.getBoundingClientRect()))({selector})"
            )
            if box:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no {what} to click on the page in {timeout:.0f} s")
            await asyncio.sleep(0.5)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=0 if kind == "mouseMoved" else 1,
            )

    async def shoot(self, ready: str, out: Path, search: str = "", timeout: float = 180.0, url: str = ""):
        """Load url (else stay on the page), wait until `ready` (a JS expression) holds and the page's text stops
        changing, save a PNG.

        search: typed into the page's search box first (the charts tab's takes a regular expression); the PNG then
        ends below the last chart."""
        if url:
            await self.call("Page.navigate", url=url)
        if search:
            await self.wait(ready, timeout)
            await self.evaluate("document.querySelector('input[role=searchbox]').focus()")
            await self.call("Input.insertText", text=search)
        await self.wait(ready, timeout)
        await asyncio.sleep(1)  # chart transitions
        clip = search and await self.evaluate(CHARTS_CLIP)
        png = await self.call("Page.captureScreenshot", format="png", **({"clip": clip} if clip else {}))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(png["data"]))
        print(f"wrote {out}")

    async def wait(self, ready: str, timeout: float):
        deadline, last, stable = time.monotonic() + timeout, None, 0
        while stable < 3:  # three polls (1.5 s) without a change in the page's text
            if time.monotonic() > deadline:
                url = await self.evaluate("location.href")
                raise SystemExit(f"{url} did not finish rendering in {timeout:.0f} s ({ready})")
            await asyncio.sleep(0.5)
            text = await self.evaluate(f"({ready}) ? document.body.innerText : null")
            stable = stable + 1 if text is not None and text == last else 0
            last = text


# the Assistant panel's close button: the button labelled Close in the panel headed "MLflow Assistant"
ASSISTANT_CLOSE = (
    "[...document.querySelectorAll('button[aria-label=Close]')].find(b => { for (let e = b; e; "
    "e = e.parentElement) if (e.innerText && e.innerText.startsWith('MLflow Assistant')) return true; "
    "return false; })"
)


async def tour(page: Page, link: str, run: dict, outs: tuple[Path, Path, Path], metrics: str):
    """The runs list as the link opens it (the Assistant panel closed as a user closes it), then the run's page
    and its charts, each reached by a click."""
    runs_out, run_out, charts_out = outs
    listed = (
        f"document.querySelector('a[href*=\"{run['run_id']}\"]') && document.body.innerText.includes('matching run')"
    )
    await page.call("Page.navigate", url=link)
    await page.wait(listed, 300)
    if await page.evaluate(f"Boolean({ASSISTANT_CLOSE})"):
        await page.click(ASSISTANT_CLOSE, "Assistant close button")
        print("closed the Assistant panel (its close button, clicked)")
    await page.shoot(f"{listed} && !{ASSISTANT_CLOSE}", runs_out)
    await page.click(f"document.querySelector('a[href*=\"{run['run_id']}\"]')", f"link to run {run['run_name']}")
    await page.shoot(
        f"[{json.dumps(run['run_name'])}, 'Parameters'].every(t => document.body.innerText.includes(t))", run_out
    )
    await page.click(
        "[...document.querySelectorAll('[role=tab], a, button')].find(e => e.innerText === 'Model metrics')",
        "Model metrics tab",
    )
    await page.shoot(CHARTS_READY, charts_out, metrics)


async def screenshots(chromium: str, link: str, run: dict, outs: tuple, metrics: str, width: int, height: int):
    port = free_port()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # its helpers may outlive it a moment
        browser = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(120):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                            targets = [t for t in await r.json() if t["type"] == "page"]
                        if targets:
                            break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.5)
                else:
                    raise SystemExit("Chromium did not open its DevTools port")
                async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    page = Page(ws)
                    await page.call(
                        "Emulation.setDeviceMetricsOverride",
                        width=width,
                        height=height,
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    await page.call("Page.enable")
                    await tour(page, link, run, outs, metrics)
        finally:
            browser.terminate()
            browser.wait(timeout=30)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="tracking URI of a finished store")
    p.add_argument("--experiment", default="layerwise-bench/smoke/karimi")
    p.add_argument("--run-name", help="the run to show (default: the FINISHED run with the most epochs)")
    p.add_argument("--runs-out", type=Path, default=Path("reports/mlflow_runs.png"), help="the runs list")
    p.add_argument("--out", type=Path, default=Path("reports/mlflow_run.png"), help="the run's overview")
    p.add_argument(
        "--charts-out", type=Path, default=Path("reports/mlflow_run_charts.png"), help="the run's metric charts"
    )
    p.add_argument(
        "--metrics",
        default=r"^((train|test)_(loss|accuracy)|(epoch|eval)_time_s)$",
        help="regular expression of the metrics charted (the charts tab's search box)",
    )
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1000)
    args = p.parse_args()
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not shutil.which(chromium):
        print("screenshot_mlflow: no chromium found: apt-get install chromium (or set $CHROMIUM)", file=sys.stderr)
        sys.exit(2)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench", "ui", "--port", str(port), "--store", args.store],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        link = ui_link(server, args.experiment)
        print(f"bench ui's link for {args.experiment}: {link}")
        wait_for_server(port, server)
        _, run = pick_run(port, args.experiment, args.run_name)
        print(f"run {run['run_name']} ({run['run_id']})")
        asyncio.run(
            screenshots(
                chromium, link, run, (args.runs_out, args.out, args.charts_out), args.metrics, args.width, args.height
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
