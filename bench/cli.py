"""The `bench` command line: claims | experiments | models | config | data | setup | sync | run | measure | aggregate | report.

Errors a user can act on (unknown ids, bad registry rows, missing data) print one line and exit with 2.
"""
import argparse
import csv
import json
import os
import sys
from pathlib import Path

from bench import BenchError

CLAIM_COLUMNS = ["paper", "table", "row", "column", "dataset", "model", "method", "variant", "metric",
                 "printed", "value", "unit", "experiment", "baseline_experiment", "id", "derived_from", "note"]


def check_paper(paper: str | None):
    """--paper names one of the registry's papers (a filter that matches nothing is an error, not an empty list)."""
    from bench.registry import load_claims

    known = sorted({c.paper for c in load_claims()})
    if paper is not None and paper not in known:
        raise BenchError(f"--paper {paper}: unknown paper (one of {', '.join(known)})")


def cmd_claims(args):
    from bench import experiments as ex
    from bench.registry import load_claims

    check_paper(args.paper)
    claims = [c for c in load_claims() if not args.paper or c.paper == args.paper]
    rows = []
    for c in claims:
        key, base = c.experiment_key(), c.baseline_key()
        rows.append({**c.row_dict(), "experiment": ex.Experiment(*key).id if key else "",
                     "baseline_experiment": ex.Experiment(*base).id if base else ""})
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, CLAIM_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif args.format == "json":
        json.dump(rows, sys.stdout, indent=1, ensure_ascii=False)
        print()
    else:
        from tabulate import tabulate

        cols = ["id", "printed", "unit", "metric", "experiment"]
        print(tabulate([[r[k] for k in cols] for r in rows], headers=cols))


def cmd_experiments(args):
    from bench import experiments as ex

    ex.profile_settings(args.profile)
    for eid, exp in ex.experiments().items():
        reason = ex.support(exp, args.profile)
        if not reason:
            print(eid)
        elif args.all:
            print(f"{eid}\tMISSING: {reason}")


def cmd_models(args):
    from bench import deterministic as det

    check_paper(args.paper)

    def progress(i, n, name):  # building and counting every model takes minutes: say where it is, on stderr
        print(f"\rmodel {i + 1}/{n}: {name}".ljust(72)[:72], end="" if i + 1 < n else "\n", file=sys.stderr,
              flush=True)

    rows = det.inventory(args.paper, progress=progress if sys.stderr.isatty() else
                         lambda i, n, name: print(f"model {i + 1}/{n}: {name}", file=sys.stderr, flush=True)
                         if i % 10 == 0 or i + 1 == n else None)
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["paper", "model", "dataset", "input", "classes", "params", "mmac", "cells", "note"])
        for r in rows:
            writer.writerow([r["paper"], r["model"], r["dataset"], r["input"], r["classes"], r["params"],
                             f"{r['mmac']:.2f}" if r["mmac"] != "" else "", " ".join(r["cells"]), r["note"]])
        return
    from tabulate import tabulate

    table = [[r["paper"], r["model"], r["dataset"], r["input"], r["classes"],
              f"{r['params']:,}" if r["params"] != "" else "-", f"{r['mmac']:,.2f}" if r["mmac"] != "" else "-",
              len(r["cells"]), r["note"]] for r in rows]
    print(tabulate(table, headers=["paper", "model", "dataset", "input", "classes", "parameters", "MMac", "cells",
                                   "note"]))


def cmd_config(args):
    from bench import experiments as ex

    json.dump(ex.config(ex.get(args.experiment), args.profile), sys.stdout, indent=1)
    print()


def cmd_setup(args):
    from bench import experiments as ex
    from bench import track
    from bench.registry import papers

    ex.profile_settings(args.profile)
    try:
        ids = track.setup(args.profile, list(papers()))
        print(f"MLflow store {track.redact(track.tracking_uri())}: experiments "
              + ", ".join(f"{p} ({i})" for p, i in ids.items()))
    except Exception as err:  # the jobs train without the store; bench sync logs them once it answers
        print(f"warning: {track.describe(err)}; the jobs train without it and say so, `bench sync --profile "
              f"{args.profile}` logs their runs once it answers", file=sys.stderr)
    if args.touch:
        Path(args.touch).parent.mkdir(parents=True, exist_ok=True)
        Path(args.touch).write_text(track.redact(track.tracking_uri()) + "\n")


def cmd_run(args):
    from bench.runner import run

    if not 0 <= args.seed < 2**32:
        raise BenchError(f"--seed {args.seed}: a seed is between 0 and 2**32 - 1")
    if args.threads is not None and args.threads < 1:
        raise BenchError(f"--threads {args.threads}: at least 1")
    result = run(args.experiment, args.seed, args.profile, out=args.out, device=args.device, threads=args.threads,
                 data_root=args.data_root, download=args.download, progress=args.progress,
                 checkpoint=args.checkpoint, record_failure=args.record_failure, gpus=args.gpus,
                 slots_per_gpu=args.slots_per_gpu, gpu_slots=args.gpu_slots, force=args.force)
    m, name = result["metrics"], f"{result['experiment']} seed {result['seed']} [{result['profile']}]"
    if result.get("skipped"):
        print(f"{name}: already {result['status']} in {args.out or 'its result file'} (MLflow run "
              f"{result['mlflow']['run_id']}); --force trains it again and replaces both")
        return
    if result.get("resumed_from_epoch"):
        print(f"{result['experiment']} seed {result['seed']}: resumed after epoch {result['resumed_from_epoch']}")
    if result["status"] != "FINISHED":  # DIVERGED is a result: recorded, exit status 0
        print(f"{name}: {result['status']}: {result.get('error', '')}; MLflow run {result['mlflow']['run_id']}")
        return
    print(f"{name}: test accuracy {m['test_accuracy']:.2f} %, train time {m['train_time_s']:.1f} s, "
          f"MLflow run {result['mlflow']['run_id']}")


def cmd_measure(args):
    from bench import deterministic as det
    from bench import results as result_files
    from bench.runner import write_json_atomic

    result = det.measure(args.id)
    paper, model = det.measurements()[args.id]
    try:  # what aggregate will accept, checked before anything is written
        result_files.validate_measurement(result, args.id, paper, model, det.spec(paper))
    except result_files.Invalid as err:
        raise BenchError(f"measurement {args.id} {err}") from None
    out = Path(args.out) if args.out else det.result_path(args.profile, args.id, args.results)
    write_json_atomic(out, result)
    conv = det.primary(result)
    print(f"{args.id}: {conv['params_total']:,} parameters, {conv['macs'][result['primary']['backend']] / 1e6:,.2f} MMac "
          f"({conv['name']}, {result['primary']['backend']}); {len(result['conventions'])} conventions -> {out}")


def cmd_data(args):
    from bench import data
    from bench.data.catalog import DATASETS

    names = list(DATASETS) if args.all or not args.names else args.names
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise BenchError(f"unknown dataset {', '.join(unknown)}: one of {', '.join(DATASETS)}")
    if args.action == "benchmark":
        return cmd_data_benchmark(args)
    failed = False
    for name in names:
        if not DATASETS[name].loader:
            print(f"{name}: no loader yet")
            continue
        if args.action == "download":
            root = data.ensure(name, args.data_root)
            problem = data.family(DATASETS[name]).layout_problem(DATASETS[name], root)
            print(f"{name}: {'ready' if not problem else 'NOT READY: ' + problem} under {root}")
            failed |= bool(problem)
            continue
        st = data.status(name, args.data_root, check_sums=args.action == "verify")
        if args.require and st["problem"]:  # the workflow's check before any training job starts
            raise BenchError(f"dataset {name} not found under {st['root']}: {st['problem']}; put it there (bench data "
                             f"download {name} on a machine with internet), or point data_root / --data-root at the "
                             f"folder that holds it, or run with --config download=true")
        state = "ready" if not st["problem"] else f"not ready: {st['problem']}"
        if not st["problem"] and not args.require:  # the samples it holds, against the catalog's split sizes
            info, found = DATASETS[name], data.counts(name, args.data_root)
            want = (info.train_size, info.test_size)
            state += (f", {found[0]:,} training / {found[1]:,} test samples"
                      + ("" if found == want else f", NOT the {want[0]:,} / {want[1]:,} of {name} (a partial or "
                                                  f"substituted copy: download it again)"))
            failed |= found != want
        print(f"{name}: {state} (root {st['root']})")
        for f in st["files"]:
            mark = {True: "verified", False: "CHECKSUM MISMATCH", None: "not verified"}[f["verified"]]
            detail = f" ({f['detail']})" if f["detail"] else ""
            print(f"  {f['file']}: {'present' if f['present'] else 'absent'}"
                  + (f", {mark}{detail}" if args.action == "verify" and f["present"] else ""))
            failed |= f["verified"] is False
        failed |= args.action == "verify" and bool(st["problem"])
    if failed:
        raise BenchError(f"bench data {args.action}: some datasets are not ready, hold other sample counts than the "
                         f"catalog's, or do not verify (see above)")


def cmd_data_benchmark(args):
    from bench.data.benchmark import run

    r = run(args.experiment, args.profile, args.rounds, args.batches, args.workers, args.device, args.width_mult,
            args.data_root, args.samples)
    print(f"{r['experiment']} on {r['device']} ({r['data']} data, width x{r['width_mult']}, batch {r['batch_size']}, "
          f"augment {r['augment']}), median of {r['rounds']} rounds of {r['batches']} training steps:")
    for name, rate in r["images_per_s"].items():
        print(f"  {name}: {rate:,.0f} images/s")
    print(f"  ratio fast / reference: {r['ratio_fast_over_reference']:.2f}")


def cmd_aggregate(args):
    from bench.aggregate import aggregate

    if args.seeds is not None and args.seeds < 1:
        raise BenchError(f"--seeds {args.seeds}: seeds per experiment is at least 1 (omit it for the profile's)")
    seeds = args.seed_list if args.seed_list else args.seeds  # numbers, or a count (0..n-1), or the profile's
    path = aggregate(args.profile, results=args.results, seeds=seeds, skip_invalid=args.skip_invalid)
    print(f"wrote {path}")


def cmd_ui(args):
    """The MLflow UI over the suite's store, on this machine only unless --host says otherwise."""
    import os

    from bench import track

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving the MLflow UI on {args.host}: anyone who reaches this address sees every run",
              file=sys.stderr)
    store = args.store or track.tracking_uri()
    if not 1 <= args.port <= 65535:
        raise BenchError(f"--port {args.port}: a TCP port is between 1 and 65535")
    import socket

    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as err:
            raise BenchError(f"--port {args.port} on {args.host}: {err.strerror.lower()} (another bench ui or MLflow "
                             f"server?); choose another --port") from None
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).exists() and not args.create:
        raise BenchError(f"no MLflow store at {store[len('sqlite:///'):]}: run the workflow (or bench run) here first, "
                         f"pass --store, or --create to start an empty one")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port), "--backend-store-uri", store,
           "--workers", "1"]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {track.redact(store)}); Ctrl-C stops it",
          file=sys.stderr)
    os.execvp(cmd[0], cmd)


def cmd_plan(args):
    """Estimated device-hours of a profile per paper and in all; --compare: predicted vs measured per finished job."""
    import torch

    from bench import plan_report

    if args.seeds is not None and args.seeds < 1:
        raise BenchError(f"--seeds {args.seeds}: seeds per experiment is at least 1 (omit it for the profile's)")
    if args.write and args.profile == "all":
        raise BenchError("--write needs one profile (the workflow's plan= is per profile)")
    torch.set_num_threads(args.threads)  # as the workflow's jobs (config threads)
    print(plan_report.run(args.profile, args.seeds, args.device, args.rate, args.calibrate, args.calibration,
                          args.compare, args.results, args.write))


def cmd_perf(args):
    """Images/s of the suite's step and of a plain reference loop, per model (a benchmark, not a test)."""
    import torch
    from tabulate import tabulate

    from bench import perf
    from bench.training import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    width = args.width if args.width is not None else (1.0 if dev.type == "cuda" else 0.25)
    for name in args.models or list(perf.CASES):
        if name not in perf.CASES:
            raise BenchError(f"unknown model '{name}': one of {', '.join(perf.CASES)}")
        found = perf.measure(name, dev, width, args.batches, args.rounds, compile_=args.compile)
        print(f"\n{name} ({found['experiment']}, width x{width:g}, batch {found['batch_size']}) on {found['device']}")
        print(tabulate([[k, f"{v:,.0f}", f"{found['vs_reference'][k]:.2f}"] for k, v in found["images_per_s"].items()],
                       headers=["Training step", "Images/s", "x reference"], tablefmt="github", disable_numparse=True))


def cmd_failed(args):
    """The result files of runs that failed for good; with --delete, removed so that the workflow runs them again.
    With --summary (the workflow's last job): FAILED and DIVERGED counted with their first errors, and exit status 1
    when a run failed for good, so that a workflow whose jobs all 'succeeded' by recording failures says so."""
    import json

    from bench import experiments as ex
    from bench.results import result_paths

    ex.profile_settings(args.profile)  # an unknown profile is an error, not an empty list
    found, diverged = [], []
    for path in result_paths(args.profile, args.results):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            print(f"{path}: not a readable result file (bench aggregate says why)")
            continue
        status = result.get("status") if isinstance(result, dict) else None
        if status not in ("FAILED", "DIVERGED"):
            continue
        line = f"{path}: {(str(result.get('error') or '').splitlines() or [status])[0]}"
        if status == "FAILED":
            found.append(line)
            if args.delete:
                path.unlink()
        else:
            diverged.append(line)
    if args.summary:
        for title, lines in (("FAILED", found), ("DIVERGED", diverged)):
            print(f"{len(lines)} {title} run(s) in {args.results}/{args.profile}" + (":" if lines else ""))
            for line in lines[:10]:
                print(f"  {line}")
            if len(lines) > 10:
                print(f"  ... and {len(lines) - 10} more (bench failed --profile {args.profile})")
        if found:
            print(f"bench: {len(found)} run(s) failed for good (the reports show them as FAILED); fix the cause, "
                  f"then `bench failed --profile {args.profile} --delete` and run the workflow again", file=sys.stderr)
            raise SystemExit(1)
        return
    for line in found:
        print(line)
    print(f"{len(found)} failed runs" + (" deleted: re-run the workflow to retry them" if args.delete and found else ""),
          file=sys.stderr)


def cmd_sync(args):
    from bench import track
    from bench.sync import sync

    c = sync(args.profile, results=args.results)
    print(f"bench sync {args.profile} into {track.redact(track.tracking_uri())}: "
          f"{c['files']} result files; runs created {c['created']}, completed {c['completed']}, already complete "
          f"{c['complete']}, restored {c['restored']}; logged {c['points']} metric points, {c['params']} params, "
          f"{c['tags']} tags, {c['inputs']} dataset inputs, {c['statuses']} end states; result files repointed "
          f"{c['repointed']}" + (f"; {c['invalid']} invalid files not synced" if c["invalid"] else ""))


def cmd_devicecheck(args):
    from bench import devicecheck

    summary = devicecheck.run(args.out, device=args.device, budget_s=args.budget, data_root=args.data_root)
    steps = ", ".join(f"{k} {v['status']}" for k, v in summary["steps"].items())
    print(f"device check on {summary['ran_on']}: {steps}; {summary['elapsed_s']:g} s of {args.budget:g}; "
          f"{Path(args.out) / 'summary.md'}")


def cmd_report(args):
    from bench.report import write_reports

    for path in write_reports(args.profile, results=args.results, reports=args.reports, only=args.only):
        print(f"wrote {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("claims", help="print the claims registry")
    s.add_argument("--format", choices=["csv", "json", "table"], default="table")
    s.add_argument("--paper")
    s.set_defaults(fn=cmd_claims)

    s = sub.add_parser("experiments", help="list the experiments a profile runs (--all: with the missing ones)")
    s.add_argument("--profile", default="paper")
    s.add_argument("--all", action="store_true")
    s.set_defaults(fn=cmd_experiments)

    s = sub.add_parser("models", help="every model a cell names: parameters, MACs at its input size, its cells")
    s.add_argument("--paper")
    s.add_argument("--format", choices=["table", "csv"], default="table")
    s.set_defaults(fn=cmd_models)

    s = sub.add_parser("config", help="print the resolved config of an experiment")
    s.add_argument("experiment")
    s.add_argument("--profile", default="paper")
    s.set_defaults(fn=cmd_config)

    s = sub.add_parser("setup", help="create the MLflow store and experiments (before the jobs fan out)")
    s.add_argument("--profile", default="paper")
    s.add_argument("--touch", help="write this marker file when done (for Snakemake)")
    s.set_defaults(fn=cmd_setup)

    s = sub.add_parser("sync", help="log every result file's MLflow run that the store lacks or holds in part "
                                    "(after an outage, a moved store, results merged from other machines)")
    s.add_argument("--profile", default="paper")
    s.add_argument("--results", default="results")
    s.set_defaults(fn=cmd_sync)

    s = sub.add_parser("devicecheck", help="the short GPU-window check: perf switches, every method at fp32 and bf16, "
                                           "the local profile, the plan probe, within a budget (toy size on a CPU)")
    s.add_argument("--out", type=Path, required=True, help="folder for summary.json and summary.md")
    s.add_argument("--budget", type=float, default=540.0, help="seconds it may take (default 540: 9 minutes)")
    s.add_argument("--device", default="auto")
    s.add_argument("--data-root", help="where real MNIST / Fashion-MNIST are (default $BENCH_DATA or ./data)")
    s.set_defaults(fn=cmd_devicecheck)

    s = sub.add_parser("run", help="train one experiment for one seed")
    s.add_argument("--experiment", "-e", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--profile", default="paper")
    s.add_argument("--out", type=Path, help="result file (default results/<profile>/runs/<experiment>/seed<k>.json)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--threads", type=int, help="torch CPU threads")
    s.add_argument("--data-root", help="dataset folder (default $BENCH_DATA or ./data)")
    s.add_argument("--download", action="store_true", help="download missing datasets (needs internet)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only when stderr is a terminal)")
    s.add_argument("--checkpoint", action=argparse.BooleanOptionalAction, default=True,
                   help="checkpoint every epoch and resume a killed run from its last checkpoint (default: on)")
    s.add_argument("--force", action="store_true",
                   help="train a seed whose result file is already FINISHED again (its MLflow run is replaced)")
    s.add_argument("--record-failure", action="store_true",
                   help="on an error, write a FAILED result file with it (exit 0) instead of failing the job")
    s.add_argument("--gpus", type=int, default=0, help="claim one of this many local GPUs (bench/gpus.py)")
    s.add_argument("--slots-per-gpu", type=int, default=1, help="jobs that may share one GPU (with --gpus)")
    s.add_argument("--gpu-slots", type=int, default=1, help="slots of one GPU this job takes (job packing)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("data", help="datasets: status | download | verify | benchmark")
    s.add_argument("action", choices=["status", "download", "verify", "benchmark"])
    s.add_argument("names", nargs="*", help="datasets (default: all)")
    s.add_argument("--all", action="store_true")
    s.add_argument("--require", action="store_true", help="status: a dataset that is not ready is an error (exit 2)")
    s.add_argument("--data-root", help="dataset folder (default $BENCH_DATA or ./data)")
    s.add_argument("--experiment", default="karimi-cifar10-lenet-backprop-sgd", help="benchmark: whose model/data")
    s.add_argument("--profile", default="paper", help="benchmark: the profile whose model and settings are used")
    s.add_argument("--samples", type=int, default=4096,
                   help="benchmark: train on this many stand-in samples (0: the profile's own data)")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--batches", type=int, default=20)
    s.add_argument("--workers", type=int, default=0, help="benchmark: DataLoader workers of the reference")
    s.add_argument("--device", default="auto")
    s.add_argument("--width-mult", type=float, help="benchmark: override the profile's width")
    s.set_defaults(fn=cmd_data)

    s = sub.add_parser("measure", help="parameters and FLOPs of a model a cell names, under every convention")
    s.add_argument("--id", required=True, help="<paper>-<model>, e.g. cruciata-vgg16 (`bench models` lists them)")
    s.add_argument("--profile", default="paper")
    s.add_argument("--results", default="results")
    s.add_argument("--out", help="result file (default results/<profile>/models/<id>.json)")
    s.set_defaults(fn=cmd_measure)

    s = sub.add_parser("audit", help="check the papers' printed numbers against each other -> reports/audit.md")
    s.add_argument("--out", default="reports/audit.md")
    s.add_argument("--results", default="results",
                   help="result files of the real-data profiles, for the findings of the runs (default: results)")
    s.set_defaults(fn=cmd_audit)

    s = sub.add_parser("worker", help="serve `bench run|measure` from one warm process (the workflow starts it)")
    s.add_argument("--socket", required=True, help="Unix socket path; jobs find it through $BENCH_WORKER")
    s.add_argument("--idle-timeout", type=float, default=3600.0, help="exit after this many seconds without jobs")
    s.add_argument("--parent-pid", type=int, help="exit when this process (Snakemake) exits")
    s.set_defaults(fn=cmd_worker)

    s = sub.add_parser("plan", help="estimated device-hours of a profile (calibrated on this device); --compare")
    s.add_argument("--profile", default="paper", help="a profile, or 'all' (one column each)")
    s.add_argument("--seeds", type=int, help="seeds per experiment (default: the profile's)")
    s.add_argument("--device", default="auto")
    s.add_argument("--rate", type=float, help="forward-MAC units per second alone (no other term) instead of the probe")
    s.add_argument("--calibration", help="a device's calibration (JSON, as `bench plan --write` or `bench "
                   "devicecheck` write it) instead of probing this device")
    s.add_argument("--calibrate", choices=["probe", "printed"], default="probe",
                   help="probe: measure this device (default); printed: the papers' printed training times on the "
                        "GPU they state (no device needed)")
    s.add_argument("--compare", action="store_true", help="predicted vs measured time of the finished runs (with "
                   "--calibrate printed: predicted vs printed time of the papers' timed cells)")
    s.add_argument("--results", default="results")
    s.add_argument("--write", help="also write the plan (every job's estimate) as JSON here")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads, as the jobs use (default 1)")
    s.set_defaults(fn=cmd_plan)

    s = sub.add_parser("perf", help="images/s of the suite's training step vs a plain reference loop, per model")
    s.add_argument("models", nargs="*", help="of: CIFAR VGG-11, CIFAR ResNet-18, LeNet (Fashion-MNIST), PredSim VGG-8b")
    s.add_argument("--device", default="auto")
    s.add_argument("--width", type=float, help="width multiplier (default: 1 on a GPU, 0.25 on the CPU)")
    s.add_argument("--batches", type=int, default=10, help="training steps per measurement")
    s.add_argument("--rounds", type=int, default=3, help="measured rounds after a warm-up round")
    s.add_argument("--threads", type=int, help="torch CPU threads")
    s.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    s.set_defaults(fn=cmd_perf)

    s = sub.add_parser("power", help="simulated verdict rates per seed count and spread: choose the seeds before "
                       "renting GPUs (no training)")
    s.add_argument("--seeds", default="2,3,4,5,8", help="seed counts, e.g. 3,5,10")
    s.add_argument("--sd", default="0.1,0.25,0.5", help="seed-to-seed standard deviations, in points")
    s.add_argument("--paper", default="ma", help="whose cells make the simulated paper (default ma: 122 accuracies)")
    s.add_argument("--replicates", type=int, default=200, help="simulated reproductions per row")
    s.add_argument("--correction", choices=["bh", "by", "holm"], help="default: bench/tolerances.yaml's")
    s.set_defaults(fn=cmd_power)

    s = sub.add_parser("ui", help="browse the runs: the MLflow UI, bound to 127.0.0.1 unless --host says otherwise")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--create", action="store_true", help="start an empty store where none exists")
    s.add_argument("--store", help="tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    s.set_defaults(fn=cmd_ui)

    for name, fn, helptext in (("aggregate", cmd_aggregate, "per-cell statistics -> results/<profile>/cells.csv"),
                               ("report", cmd_report, "Markdown reports -> reports/<profile>/"),
                               ("failed", cmd_failed, "runs that failed for good (FAILED result files)")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--profile", default="paper")
        s.add_argument("--results", default="results")
        if name == "aggregate":
            seeds = s.add_mutually_exclusive_group()
            seeds.add_argument("--seeds", type=int, help="how many seeds to aggregate: 0 .. n-1, as the workflow's "
                                                         "seeds (default: the profile's count)")
            seeds.add_argument("--seed-list", help="the seed numbers to aggregate instead, e.g. 0,2,5")
            s.add_argument("--skip-invalid", action="store_true",
                           help="write the aggregate even when some result files are invalid (they are used nowhere)")
        elif name == "report":
            s.add_argument("--reports", default="reports")
            s.add_argument("--only", default="", help="the workflow's only= restriction, said in every header")
        else:
            s.add_argument("--delete", action="store_true", help="delete them, so that the workflow retries them")
            s.add_argument("--summary", action="store_true",
                           help="count FAILED and DIVERGED runs with their first errors; exit 1 if any FAILED")
        s.set_defaults(fn=fn)
    return p


def cmd_audit(args):
    from bench import audit

    found = audit.findings()
    runs = audit.run_findings(args.results)
    implied = audit.implied_epochs_findings()
    for paper, items in found.items():
        for item in items + runs.get(paper, []) + implied.get(paper, []):
            print(f"{paper}: {item}")
    path = audit.write_audit(args.out, found, implied, runs=runs)
    print(f"{sum(len(v) for v in found.values())} findings, {sum(len(v) for v in implied.values())} printed "
          f"training times with their implied epochs -> {path}", file=sys.stderr)


def _numbers(text: str, kind, what: str, minimum) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"{what}: '{text}' is not a comma-separated list of numbers") from None
    if not values or any(v < minimum for v in values):
        raise BenchError(f"{what}: every value must be at least {minimum} (got '{text}')")
    return values


def cmd_power(args):
    from bench import power

    seeds = _numbers(args.seeds, int, "--seeds", 2)
    sds = _numbers(args.sd, float, "--sd", 1e-6)
    if args.replicates < 1:
        raise BenchError("--replicates must be at least 1")
    try:
        power.paper_cells(args.paper)
    except ValueError as err:
        raise BenchError(str(err)) from None
    print(power.describe(power.table(seeds, sds, replicates=args.replicates, paper=args.paper,
                                     correction=args.correction)))


def cmd_worker(args):
    from bench import worker

    worker.serve(args.socket, idle_timeout=args.idle_timeout, parent_pid=args.parent_pid)


def main(argv=None) -> int:
    from bench import worker

    argv = sys.argv[1:] if argv is None else list(argv)
    forwarded = worker.forward(argv)  # a warm worker ($BENCH_WORKER) runs it, when there is one
    if forwarded is not None:
        return forwarded
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`bench claims | head -1`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    return 0
