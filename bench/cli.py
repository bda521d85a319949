"""The `bench` command line: the commands below (`bench <command> --help` gives each one's options).

    claims       print the claims registry (table, CSV or JSON)
    experiments  list the experiments a profile runs (--all: with the missing ones)
    models       every model a cell names: parameters, MACs at its input size, its cells
    config       print the resolved config of an experiment, each setting with its source
    setup        create the MLflow store and experiments (before the jobs fan out)
    sync         log every result file's MLflow run that the store lacks or holds in part
    devicecheck  the short GPU-window check: perf switches, every method, the plan probe, within a budget
    run          train one experiment for one seed
    status       what a profile's runs are doing: running (epoch, ETA), finished, failed, stopped, what remains
    data         datasets: status | download | verify | benchmark
    measure      parameters and FLOPs of a model a cell names, under every convention
    audit        check the papers' printed numbers against each other -> reports/audit.md
    worker       serve `bench run|measure` from one warm process (the workflow starts it)
    plan         estimated device-hours of a profile; --compare: predicted vs measured per finished job
    rehearse     run each paper experiment for a few batches at its paper shapes (every code path)
    perf         images/s of the suite's training step vs a plain reference loop, per model
    power        simulated verdict rates per seed count and spread (choose the seeds before renting GPUs)
    ui           browse the runs in the MLflow UI (this machine only unless --host says otherwise)
    aggregate    per-cell statistics -> results/<profile>/cells.csv
    report       Markdown reports -> reports/<profile>/
    failed       runs that failed for good (FAILED result files)

Argument parsing only: each command calls the stage that does the work (bench/__init__.py lists the stages).
Errors a user can act on (unknown ids, bad registry rows, missing data) print one line and exit with 2.
"""

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from bench import BenchError


def cmd_claims(args):
    from bench import experiments as ex
    from bench.claims.registry import check_paper

    check_paper(args.paper)
    ex.print_claims(args.paper, args.format)


def cmd_experiments(args):
    from bench.run.targets import print_experiments

    print_experiments(args.profile, with_missing=args.all)


def cmd_models(args):
    from bench.claims.registry import check_paper
    from bench.run.deterministic import print_inventory

    check_paper(args.paper)
    print_inventory(args.paper, args.format)


def cmd_config(args):
    from bench import experiments as ex

    if args.format == "json":
        json.dump(ex.config(ex.get(args.experiment), args.profile), sys.stdout, indent=1)
        print()
    else:
        print(ex.describe_config(ex.get(args.experiment), args.profile))


def cmd_setup(args):
    from bench import experiments as ex
    from bench.claims.registry import papers
    from bench.run import track

    ex.profile_settings(args.profile)
    track.prepare(args.profile, list(papers()), touch=args.touch)


def cmd_run(args):
    from bench.cost.resources import run_memory_settings
    from bench.run.runner import RunOptions, outcome, run

    if not 0 <= args.seed < 2**32:
        raise BenchError(f"--seed {args.seed}: a seed is between 0 and 2**32 - 1")
    if args.threads is not None and args.threads < 1:
        raise BenchError(f"--threads {args.threads}: at least 1")
    if args.plan and not Path(args.plan).is_file():
        raise BenchError(f"--plan {args.plan}: no such file (`bench plan --write F` writes one)")
    options = RunOptions(
        out=args.out,
        device=args.device,
        threads=args.threads,
        data_root=args.data_root,
        download=args.download,
        progress=args.progress,
        checkpoint=args.checkpoint,
        record_failure=args.record_failure,
        gpus=args.gpus,
        slots_per_gpu=args.slots_per_gpu,
        gpu_slots=args.gpu_slots,
        force=args.force,
        plan=args.plan,
        memory_rules=run_memory_settings,
    )
    result = run(args.experiment, args.seed, args.profile, options)
    print(outcome(result, args.out))


def cmd_status(args):
    """What a profile's runs are doing: running (epoch, ETA), finished, failed, stopped, and what remains."""
    from bench.run.status import watch

    if args.watch is not None and args.watch <= 0:
        raise BenchError(f"--watch {args.watch:g}: seconds between updates, more than 0")
    if args.plan and not Path(args.plan).is_file():
        raise BenchError(f"--plan {args.plan}: no such file (`bench plan --write F` writes one)")
    watch(args.profile, args.results, args.plan, args.only, args.seeds, args.watch)


def cmd_measure(args):
    from bench.run.deterministic import measure_to_file

    print(measure_to_file(args.id, args.profile, args.results, args.out))


def cmd_data(args):
    from bench.data.ready import dataset_names, report

    names = dataset_names(args.names, args.all)
    if args.action != "benchmark":
        return report(args.action, names, args.data_root, require=args.require)
    from bench.cost.data_benchmark import describe, run

    print(
        describe(
            run(
                args.experiment,
                args.profile,
                args.rounds,
                args.batches,
                args.workers,
                args.device,
                args.width_mult,
                args.data_root,
                args.samples,
            )
        )
    )


def cmd_aggregate(args):
    from bench.verdicts.aggregate import aggregate

    if args.seeds is not None and args.seeds < 1:
        raise BenchError(f"--seeds {args.seeds}: seeds per experiment is at least 1 (omit it for the profile's)")
    seeds = args.seed_list if args.seed_list else args.seeds  # numbers, or a count (0..n-1), or the profile's
    path = aggregate(args.profile, results=args.results, seeds=seeds, skip_invalid=args.skip_invalid)
    print(f"wrote {path}")


def cmd_ui(args):
    """The MLflow UI over the suite's store, on this machine only unless --host says otherwise."""
    from bench.run.ui import serve

    _check_host(args.host)
    serve(args.host, args.port, args.store, args.create)


def _check_host(host: str):
    """--host names an address of this machine (or a name that resolves to one): else one line that says so, before
    the port is tried (a port cannot help) and before the warning about serving beyond this machine."""
    import socket

    try:
        family, _, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise BenchError(
            f"--host {host}: does not resolve ({getattr(err, 'strerror', None) or err}); give a name "
            "or an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)  # port 0: any free one, so only the address is tried
        except OSError as err:
            raise BenchError(
                f"--host {host}: not an address of this machine ({(err.strerror or str(err)).lower()})"
            ) from None


def cmd_plan(args):
    """Estimated device-hours of a profile per paper and in all; --compare: predicted vs measured per finished job."""
    import torch

    from bench.cost import plan_report

    if args.seeds is not None and args.seeds < 1:
        raise BenchError(f"--seeds {args.seeds}: seeds per experiment is at least 1 (omit it for the profile's)")
    if args.write and args.profile == "all":
        raise BenchError("--write needs one profile (the workflow's plan= is per profile)")
    from bench.cost.resources import Node

    try:
        node = Node.parse(args.fit) if args.fit is not None else None
    except ValueError as err:
        raise BenchError(str(err)) from None
    if node is not None and (args.compare or args.profile == "all"):
        raise BenchError("--fit needs one profile and no --compare")
    torch.set_num_threads(args.threads)  # as the workflow's jobs (config threads)
    text = plan_report.run(
        args.profile,
        args.seeds,
        args.device,
        args.rate,
        args.calibrate,
        args.calibration,
        args.compare,
        args.results,
        args.write,
        node,
    )
    print(text)
    if node is not None and "do not fit:" in text:
        return 1


def cmd_rehearse(args):
    """Every paper experiment for a few batches at its paper shapes: passed/failed, memory, disk, seconds."""
    from bench.cost import rehearse

    if args.profile != rehearse.rehearsed():
        raise BenchError(
            f"--profile {args.profile}: the rehearsal profile rehearses '{rehearse.rehearsed()}' (bench/profiles.yaml)"
        )
    if args.timeout <= 0:
        raise BenchError(f"--timeout {args.timeout}: seconds per job must be positive")
    if args.repredict:
        if args.json is None:
            raise BenchError("--repredict needs --json: the rehearsal records to predict again")
        print(rehearse.repredict(args.json, args.report))
        return 0
    done, summary = rehearse.run(
        args.only,
        args.json,
        args.report,
        args.timeout,
        args.keep,
        progress=lambda line: print(line, flush=True),
        resume=args.resume,
    )
    print(summary)
    return 1 if any(r["status"] == "failed" for r in done) else 0


def cmd_perf(args):
    """Images/s of the suite's step and of a plain reference loop, per model (a benchmark, not a test)."""
    from bench.cost.perf import print_rates

    print_rates(args.models, args.device, args.width, args.batches, args.rounds, args.compile, args.threads)


def cmd_failed(args):
    from bench.run.failed import failed

    failed(args.profile, args.results, delete=args.delete, summary=args.summary)


def cmd_sync(args):
    from bench.run.sync import describe, sync

    print(describe(args.profile, sync(args.profile, results=args.results)))


def cmd_devicecheck(args):
    if args.out.exists() and not args.out.is_dir():
        raise BenchError(
            f"--out {args.out}: a file, not a folder (devicecheck writes summary.json and summary.md into a folder)"
        )
    from bench.cost import devicecheck

    summary = devicecheck.run(args.out, device=args.device, budget_s=args.budget, data_root=args.data_root)
    steps = ", ".join(f"{k} {v['status']}" for k, v in summary["steps"].items())
    print(
        f"device check on {summary['ran_on']}: {steps}; {summary['elapsed_s']:g} s of {args.budget:g}; "
        f"{Path(args.out) / 'summary.md'}"
    )


def cmd_report(args):
    from bench.report.pages import write_reports

    for path in write_reports(
        args.profile, results=args.results, reports=args.reports, only=args.only, replace=args.replace
    ):
        print(f"wrote {path}")


def _add_claims(subparsers):
    s = subparsers.add_parser("claims", help="print the claims registry")
    s.add_argument("--format", choices=["csv", "json", "table"], default="table")
    s.add_argument("--paper")
    s.set_defaults(fn=cmd_claims)


def _add_experiments(subparsers):
    s = subparsers.add_parser("experiments", help="list the experiments a profile runs (--all: with the missing ones)")
    s.add_argument("--profile", default="paper")
    s.add_argument("--all", action="store_true")
    s.set_defaults(fn=cmd_experiments)


def _add_models(subparsers):
    s = subparsers.add_parser("models", help="every model a cell names: parameters, MACs at its input size, its cells")
    s.add_argument("--paper")
    s.add_argument("--format", choices=["table", "csv"], default="table")
    s.set_defaults(fn=cmd_models)


def _add_config(subparsers):
    s = subparsers.add_parser("config", help="print the resolved config of an experiment")
    s.add_argument("experiment")
    s.add_argument("--profile", default="paper")
    s.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text: each setting with its source, each source once (default); json: as a run records it",
    )
    s.set_defaults(fn=cmd_config)


def _add_setup(subparsers):
    s = subparsers.add_parser("setup", help="create the MLflow store and experiments (before the jobs fan out)")
    s.add_argument("--profile", default="paper")
    s.add_argument("--touch", help="write this marker file when done (for Snakemake)")
    s.set_defaults(fn=cmd_setup)


def _add_sync(subparsers):
    s = subparsers.add_parser(
        "sync",
        help="log every result file's MLflow run that the store lacks or holds in part "
        "(after an outage, a moved store, results merged from other machines)",
    )
    s.add_argument("--profile", default="paper")
    s.add_argument("--results", default="results")
    s.set_defaults(fn=cmd_sync)


def _add_devicecheck(subparsers):
    s = subparsers.add_parser(
        "devicecheck",
        help="the short GPU-window check: perf switches, every method at fp32 and bf16, "
        "the local profile, the plan probe, within a budget (toy size on a CPU)",
    )
    s.add_argument("--out", type=Path, required=True, help="folder for summary.json and summary.md")
    s.add_argument("--budget", type=float, default=540.0, help="seconds it may take (default 540: 9 minutes)")
    s.add_argument("--device", default="auto")
    s.add_argument("--data-root", help="where real MNIST / Fashion-MNIST are (default $BENCH_DATA or ./data)")
    s.set_defaults(fn=cmd_devicecheck)


def _add_run(subparsers):
    s = subparsers.add_parser("run", help="train one experiment for one seed")
    s.add_argument("--experiment", "-e", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--profile", default="paper")
    s.add_argument("--out", type=Path, help="result file (default results/<profile>/runs/<experiment>/seed<k>.json)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--threads", type=int, help="torch CPU threads")
    s.add_argument("--data-root", help="dataset folder (default $BENCH_DATA or ./data)")
    s.add_argument("--download", action="store_true", help="download missing datasets (needs internet)")
    _add_run_switches(s)
    s.add_argument("--gpus", type=int, default=0, help="claim one of this many local GPUs (bench/run/gpus.py)")
    s.add_argument("--slots-per-gpu", type=int, default=1, help="jobs that may share one GPU (with --gpus)")
    s.add_argument("--gpu-slots", type=int, default=1, help="slots of one GPU this job takes (job packing)")
    s.set_defaults(fn=cmd_run)


def _add_run_switches(s):
    """`bench run`'s switches: progress bars, checkpoints, a forced rerun, the plan for the ETA, failure records."""
    s.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: only when stderr is a terminal)",
    )
    s.add_argument(
        "--checkpoint",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="checkpoint every epoch and resume a killed run from its last checkpoint (default: on)",
    )
    s.add_argument(
        "--force",
        action="store_true",
        help="train a seed whose result file is already FINISHED again (its MLflow run is replaced)",
    )
    s.add_argument("--plan", help="a `bench plan --write` JSON for the start line's ETA (default: $BENCH_PLAN)")
    s.add_argument(
        "--record-failure",
        action="store_true",
        help="on an error, write a FAILED result file with it (exit 0) instead of failing the job",
    )


def _add_status(subparsers):
    s = subparsers.add_parser(
        "status",
        help="what a profile's runs are doing (from the files they write): running with "
        "epoch and ETA, finished, failed, stopped, and the plan's estimate of what remains",
    )
    s.add_argument("--profile", default="paper")
    s.add_argument("--results", default="results")
    s.add_argument("--plan", help="a `bench plan --write` JSON (default: $BENCH_PLAN, else the one the runs read)")
    s.add_argument("--only", default="", help="the workflow's only= restriction (shell patterns of experiment ids)")
    s.add_argument("--seeds", default="", help="the workflow's seeds= (default: the profile's)")
    s.add_argument("--watch", type=float, metavar="SECONDS", help="print it again every SECONDS until Ctrl-C")
    s.set_defaults(fn=cmd_status)


def _add_data(subparsers):
    s = subparsers.add_parser("data", help="datasets: status | download | verify | benchmark")
    s.add_argument("action", choices=["status", "download", "verify", "benchmark"])
    s.add_argument("names", nargs="*", help="datasets (default: all)")
    s.add_argument("--all", action="store_true")
    s.add_argument("--require", action="store_true", help="status: a dataset that is not ready is an error (exit 2)")
    s.add_argument("--data-root", help="dataset folder (default $BENCH_DATA or ./data)")
    _add_data_benchmark_options(s)
    s.set_defaults(fn=cmd_data)


def _add_data_benchmark_options(s):
    """`bench data benchmark`'s options: whose model and data, how many samples, rounds, batches and workers."""
    s.add_argument("--experiment", default="karimi-cifar10-lenet-backprop-sgd", help="benchmark: whose model/data")
    s.add_argument("--profile", default="paper", help="benchmark: the profile whose model and settings are used")
    s.add_argument(
        "--samples",
        type=int,
        default=4096,
        help="benchmark: train on this many stand-in samples (0: the profile's own data)",
    )
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--batches", type=int, default=20)
    s.add_argument("--workers", type=int, default=0, help="benchmark: DataLoader workers of the reference")
    s.add_argument("--device", default="auto")
    s.add_argument("--width-mult", type=float, help="benchmark: override the profile's width")


def _add_measure(subparsers):
    s = subparsers.add_parser("measure", help="parameters and FLOPs of a model a cell names, under every convention")
    s.add_argument("--id", required=True, help="<paper>-<model>, e.g. cruciata-vgg16 (`bench models` lists them)")
    s.add_argument("--profile", default="paper")
    s.add_argument("--results", default="results")
    s.add_argument("--out", help="result file (default results/<profile>/models/<id>.json)")
    s.set_defaults(fn=cmd_measure)


def _add_audit(subparsers):
    s = subparsers.add_parser("audit", help="check the papers' printed numbers against each other -> reports/audit.md")
    s.add_argument("--out", default="reports/audit.md")
    s.add_argument(
        "--results",
        default="results",
        help="result files of the real-data profiles, for the findings of the runs (default: results)",
    )
    s.add_argument(
        "--replace",
        action="store_true",
        help="write over an audit with more findings (read from result files absent here)",
    )
    s.set_defaults(fn=cmd_audit)


def _add_worker(subparsers):
    s = subparsers.add_parser("worker", help="serve `bench run|measure` from one warm process (the workflow starts it)")
    s.add_argument("--socket", required=True, help="Unix socket path; jobs find it through $BENCH_WORKER")
    s.add_argument("--idle-timeout", type=float, default=3600.0, help="exit after this many seconds without jobs")
    s.add_argument("--parent-pid", type=int, help="exit when this process (Snakemake) exits")
    s.set_defaults(fn=cmd_worker)


def _add_plan(subparsers):
    s = subparsers.add_parser("plan", help="estimated device-hours of a profile (calibrated on this device); --compare")
    s.add_argument("--profile", default="paper", help="a profile, or 'all' (one column each)")
    s.add_argument("--seeds", type=int, help="seeds per experiment (default: the profile's)")
    s.add_argument("--device", default="auto")
    s.add_argument("--rate", type=float, help="forward-MAC units per second alone (no other term) instead of the probe")
    _add_plan_calibration(s)
    s.add_argument("--results", default="results")
    s.add_argument("--write", help="also write the plan (every job's estimate) as JSON here")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads, as the jobs use (default 1)")
    s.add_argument(
        "--fit",
        metavar="gpu=GB,host=GB",
        help="also predict every job's peak device, host and disk "
        "memory, list the jobs that do not fit that node (GB) with the part that overflows, and exit 1 if "
        "any does not; e.g. gpu=24,host=64, the papers' RTX 3090 with 64 GB of host memory (host only: a CPU node)",
    )
    s.set_defaults(fn=cmd_plan)


def _add_plan_calibration(s):
    """`bench plan`'s calibration options: a calibration file, probe or printed times, and --compare."""
    s.add_argument(
        "--calibration",
        help="a device's calibration (JSON, as `bench plan --write` or `bench "
        "devicecheck` write it) instead of probing this device",
    )
    s.add_argument(
        "--calibrate",
        choices=["probe", "printed"],
        default="probe",
        help="probe: measure this device (default); printed: the papers' printed training times on the "
        "GPU they state (no device needed)",
    )
    s.add_argument(
        "--compare",
        action="store_true",
        help="predicted vs measured time of the finished runs (with "
        "--calibrate printed: predicted vs printed time of the papers' timed cells)",
    )


def _add_rehearse(subparsers):
    s = subparsers.add_parser(
        "rehearse",
        help="run each paper experiment for a few batches at its paper shapes: every "
        "code path, checkpoint and resume, host peak against bench plan's prediction",
    )
    s.add_argument("--profile", default="paper", help="the profile rehearsed (the rehearsal profile's `rehearses`)")
    s.add_argument("--only", help="experiment id pattern (fnmatch); default: one experiment per (paper, model, method)")
    s.add_argument("--json", type=Path, help="merge the records into this JSON file (one per experiment)")
    s.add_argument("--report", type=Path, help="write the Markdown report of every record in --json here")
    s.add_argument("--timeout", type=float, default=3600.0, help="seconds a job's process may take (default 3600)")
    s.add_argument("--keep", type=Path, help="keep the jobs' result files, logs and MLflow store here")
    s.add_argument(
        "--resume",
        action="store_true",
        help="go on with the rehearsal kept in --keep where it stopped part-way (a job there that finished is "
        "reported as it was)",
    )
    s.add_argument(
        "--repredict",
        action="store_true",
        help="run nothing: predict the host peaks of the records in --json again with this checkout's resource "
        "model (after it changed), and write --report",
    )
    s.set_defaults(fn=cmd_rehearse)


def _add_perf(subparsers):
    s = subparsers.add_parser("perf", help="images/s of the suite's training step vs a plain reference loop, per model")
    s.add_argument("models", nargs="*", help="of: CIFAR VGG-11, CIFAR ResNet-18, LeNet (Fashion-MNIST), PredSim VGG-8b")
    s.add_argument("--device", default="auto")
    s.add_argument("--width", type=float, help="width multiplier (default: 1 on a GPU, 0.25 on the CPU)")
    s.add_argument("--batches", type=int, default=10, help="training steps per measurement")
    s.add_argument("--rounds", type=int, default=3, help="measured rounds after a warm-up round")
    s.add_argument("--threads", type=int, help="torch CPU threads")
    s.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    s.set_defaults(fn=cmd_perf)


def _add_power(subparsers):
    s = subparsers.add_parser(
        "power",
        help="simulated verdict rates per seed count and spread: choose the seeds before renting GPUs (no training)",
    )
    s.add_argument("--seeds", default="2,3,4,5,8", help="seed counts, e.g. 3,5,10")
    s.add_argument("--sd", default="0.1,0.25,0.5", help="seed-to-seed standard deviations, in points")
    s.add_argument("--paper", default="ma", help="whose cells make the simulated paper (default ma: 122 accuracies)")
    s.add_argument("--replicates", type=int, default=200, help="simulated reproductions per row")
    s.add_argument("--correction", choices=["bh", "by", "holm"], help="default: bench/tolerances.yaml's")
    s.add_argument(
        "--scenario",
        default="mix",
        help="where the true means sit, comma-separated: at (the printed values), off-X (X points off, "
        "e.g. off-0.25), normal (off by N(0, sd)), mix (default; README: all five)",
    )
    s.add_argument("--seed", type=int, default=0, help="the simulation's random seed")
    s.set_defaults(fn=cmd_power)


def _add_ui(subparsers):
    s = subparsers.add_parser(
        "ui", help="browse the runs: the MLflow UI, bound to 127.0.0.1 unless --host says otherwise"
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--create", action="store_true", help="start an empty store where none exists")
    s.add_argument("--store", help="tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    s.set_defaults(fn=cmd_ui)


def _add_results_command(subparsers, name: str, fn, helptext: str):
    """A command over a profile's result files (--profile, --results): the parser, for its own options to follow."""
    s = subparsers.add_parser(name, help=helptext)
    s.add_argument("--profile", default="paper")
    s.add_argument("--results", default="results")
    s.set_defaults(fn=fn)
    return s


def _add_aggregate(subparsers):
    s = _add_results_command(
        subparsers, "aggregate", cmd_aggregate, "per-cell statistics -> results/<profile>/cells.csv"
    )
    seeds = s.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds",
        type=int,
        help="how many seeds to aggregate: 0 .. n-1, as the workflow's seeds (default: the profile's count)",
    )
    seeds.add_argument("--seed-list", help="the seed numbers to aggregate instead, e.g. 0,2,5")
    s.add_argument(
        "--skip-invalid",
        action="store_true",
        help="write the aggregate even when some result files are invalid (they are used nowhere)",
    )


def _add_report(subparsers):
    s = _add_results_command(subparsers, "report", cmd_report, "Markdown reports -> reports/<profile>/")
    s.add_argument("--reports", default="reports")
    s.add_argument("--only", default="", help="the workflow's only= restriction, said in every header")
    s.add_argument(
        "--replace",
        action="store_true",
        help="write over a fuller report (more result files or cells with a value) already there",
    )


def _add_failed(subparsers):
    s = _add_results_command(subparsers, "failed", cmd_failed, "runs that failed for good (FAILED result files)")
    s.add_argument("--delete", action="store_true", help="delete them, so that the workflow retries them")
    s.add_argument(
        "--summary",
        action="store_true",
        help="count FAILED and DIVERGED runs with their first errors; exit 1 if any FAILED",
    )


# every command in the order `bench --help` lists them
COMMANDS = (
    _add_claims,
    _add_experiments,
    _add_models,
    _add_config,
    _add_setup,
    _add_sync,
    _add_devicecheck,
    _add_run,
    _add_status,
    _add_data,
    _add_measure,
    _add_audit,
    _add_worker,
    _add_plan,
    _add_rehearse,
    _add_perf,
    _add_power,
    _add_ui,
    _add_aggregate,
    _add_report,
    _add_failed,
)


def parser() -> argparse.ArgumentParser:
    # the docstring's first paragraph, as one line
    p = argparse.ArgumentParser(prog="bench", description=" ".join(__doc__.split("\n\n")[0].split()))
    subparsers = p.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return p


def cmd_audit(args):
    from bench.report.audit import run_audit

    run_audit(args.out, args.results, args.replace)


def _numbers(text: str, kind, what: str, minimum) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"{what}: '{text}' is not a comma-separated list of numbers") from None
    if not values or any(v < minimum for v in values):
        raise BenchError(f"{what}: every value must be at least {minimum} (got '{text}')")
    return values


def cmd_power(args):
    from bench.verdicts import power

    seeds = _numbers(args.seeds, int, "--seeds", 2)
    sds = _numbers(args.sd, float, "--sd", 1e-6)
    if args.replicates < 1:
        raise BenchError("--replicates must be at least 1")
    try:
        power.paper_cells(args.paper)
        scenarios = [power.check_scenario(x.strip()) for x in args.scenario.split(",") if x.strip()]
    except ValueError as err:
        raise BenchError(str(err)) from None
    if not scenarios:
        raise BenchError("--scenario: name at least one (at, off-X, normal, mix)")
    rows = power.table(
        seeds,
        sds,
        scenarios,
        replicates=args.replicates,
        paper=args.paper,
        correction=args.correction,
        rng_seed=args.seed,
    )
    print(power.describe(rows))
    print(
        "seeds recommended (every scenario above right for 80 % of the cells): "
        + "; ".join(
            f"sd {sd:g}: {n if n else 'more than ' + str(max(seeds))}" for sd, n in power.recommend(rows).items()
        )
    )


def cmd_worker(args):
    from bench.run import worker

    worker.serve(args.socket, main, idle_timeout=args.idle_timeout, parent_pid=args.parent_pid)


def interrupt_code(err: BaseException) -> int:
    """128 + the signal that interrupted: 130 for Ctrl-C (SIGINT), 143 for SIGTERM (raised as KeyboardInterrupt
    'signal 15' by the handler main installs, and by bench.run.runner's)."""
    words = str(err).split()
    return 128 + int(words[1]) if len(words) == 2 and words[0] == "signal" and words[1].isdigit() else 130


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


_STATE = {"running": False}


def _unraisable(default):
    """Ctrl-C that lands in a finalizer or an atexit callback, which Python reports as 'Exception ignored in ...' and
    otherwise swallows: while a command runs, the signal is sent again, so that it ends the command as any Ctrl-C
    does (its cleanup runs); once the command is done, the process ends with the one line."""

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            return default(unraisable)
        if _STATE["running"]:  # sent from a thread a moment later, to land outside this hook and the finalizer
            timer = threading.Timer(0.05, os.kill, (os.getpid(), interrupt_code(unraisable.exc_value) - 128))
            timer.daemon = True
            timer.start()
            return None
        print("bench: interrupted", file=sys.stderr, flush=True)
        os._exit(interrupt_code(unraisable.exc_value))

    return hook


def _path_of(err: OSError):
    """The file an OSError is about: its filename, else, for a write that failed without naming its file (no space
    left, over quota, too large, an I/O error), the file open in the innermost frame that holds one, if it has a
    name (a file opened from a descriptor has none: its writer names the path, as results.write_json_atomic does)."""
    import errno
    import io

    if err.filename or err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
        return err.filename
    held, tb = [], err.__traceback__
    while tb is not None:
        held = [v for v in tb.tb_frame.f_locals.values() if isinstance(v, io.IOBase)] or held
        tb = tb.tb_next
    names = [f.name for f in held if isinstance(getattr(f, "name", None), (str, bytes, os.PathLike))]
    return os.fsdecode(names[0]) if names else None


def main(argv=None) -> int:
    """The command line; Ctrl-C or SIGTERM anywhere ends it with one line, 'bench: interrupted', no traceback, exit
    status 130 (Ctrl-C) or 143 (SIGTERM)."""
    entry = argv is None  # this process's own command line (not a call from a test or from the warm worker's child)
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None
    old_hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    _STATE["running"] = True
    try:
        return _main(argv)
    except KeyboardInterrupt as err:  # here, in the worker's client or in argument parsing
        print("bench: interrupted", file=sys.stderr, flush=True)
        if entry and main_thread:  # nothing more while Python shuts down, whatever signal comes next
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return interrupt_code(err)
    finally:
        _STATE["running"] = False
        if not entry:  # a caller in this process gets its handlers back (a process's own keep them to its end)
            sys.unraisablehook = old_hook
            if main_thread:
                signal.signal(signal.SIGTERM, old_term)


def _main(argv) -> int:
    from bench.run import worker

    argv = sys.argv[1:] if argv is None else list(argv)
    forwarded = worker.forward(argv)  # a warm worker ($BENCH_WORKER) runs it, when there is one
    if forwarded is not None:
        return forwarded
    args = parser().parse_args(argv)
    try:
        code = args.fn(args)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`bench claims | head -1`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except OSError as err:  # a file-system error anywhere (read-only, permission, a folder, exists, no space)
        path = _path_of(err)
        where = f"{path}: " if path else ""
        print(f"bench: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0  # a command's own status (bench plan --fit: 1 if a job does not fit)
