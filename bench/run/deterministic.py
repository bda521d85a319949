"""Cells computed from the model alone, without training: parameter counts and forward FLOPs (MACs).

A measurement is one (paper, model) that some parameter or FLOPs cell names; its id is `<paper>-<model>`.
The paper's grid lists the *conventions* to measure it under (`measurements:` in bench/grids/<paper>.yaml):
the model as configured for one of the paper's datasets, or with an input size, class count and model options
of its own (e.g. torchvision's ImageNet shape at 224 px). Every convention is measured with every ptflops
backend and reported side by side; the grid names the primary one (convention and backend), with its reason,
and that one gives the cell its reproduced value. Measurements always use the full width, whatever the
profile: they cost a few forward passes and the cells are exact claims.
"""

import copy
import fnmatch
from pathlib import Path

from bench import BenchError
from bench import experiments as ex
from bench.claims.registry import load_claims

MODEL_METRICS = {"params", "flops"}


def measurement_id(paper: str, model: str) -> str:
    return f"{paper}-{model}"


def measurements(claims=None) -> dict[str, tuple[str, str]]:
    """id -> (paper, model) for every model a parameter or FLOPs cell measures (on the full model as trained
    end to end; Learn & Drop's 'Dropping' FLOPs depend on a training run and are not measured here)."""
    out = {}
    for c in claims if claims is not None else load_claims():
        if c.metric in MODEL_METRICS and c.method in ("", "backprop"):
            out[measurement_id(c.paper, c.model)] = (c.paper, c.model)
    return out


def spec(paper: str) -> dict:
    found = ex.grid(paper).get("measurements")
    if not found:
        raise BenchError(f"bench/grids/{paper}.yaml has no 'measurements' section")
    return found


def convention_config(paper: str, model: str, convention: dict) -> dict:
    """The experiment config of `model` under one convention: the paper's config for the convention's dataset,
    then the convention's own input size, classes and model options (per model pattern)."""
    cfg, _ = ex.paper_config(ex.Experiment(paper, convention["dataset"], model, "backprop"))
    cfg = copy.deepcopy(cfg)
    for key in ("input_size", "num_classes", "in_channels"):
        if key in convention:
            cfg[key] = convention[key]
    for override in convention.get("overrides", []):
        if fnmatch.fnmatchcase(model, override["match"]):
            cfg["model"].update(override["model"])
    cfg["model"]["width_mult"] = 1.0
    return cfg


def missing_reason(paper: str, model: str) -> str:
    """'' when the model can be built for its measurement, else why not."""
    from bench.models import missing_reason as model_missing

    return model_missing(convention_config(paper, model, spec(paper)["conventions"][0])["architecture"])


def build(paper: str, model: str, convention: dict):
    from bench.claims.datasets import DATASETS
    from bench.models import build_model

    cfg = convention_config(paper, model, convention)
    info = DATASETS[convention["dataset"]]
    return build_model(
        cfg["architecture"],
        cfg.get("in_channels", info.channels),
        cfg.get("num_classes", info.num_classes),
        cfg["input_size"],
        cfg["model"],
    )


def measure(mid: str) -> dict:
    """Parameters (total and per block) and forward MACs under every convention and backend ('pytorch' and 'aten'
    counted on the meta device, 'pytorch+functional' on the CPU: bench.run.measure.forward_macs)."""
    import torch

    from bench.run.measure import FLOPS_BACKENDS, code_version, count_parameters, forward_macs, part_parameters

    found = measurements()
    if mid not in found:
        raise BenchError(f"unknown measurement '{mid}': one of {', '.join(found)}")
    paper, model = found[mid]
    s = spec(paper)
    rows = []
    for convention in s["conventions"]:
        net = build(paper, model, convention)
        with torch.device("meta"):  # shapes only: the same 'pytorch' and 'aten' counts in a fraction of the time
            shapes_only = build(paper, model, convention)
        macs = {
            backend: forward_macs(net if backend == "pytorch+functional" else shapes_only, backend)
            for backend in FLOPS_BACKENDS
        }
        rows.append(
            {
                "name": convention["name"],
                "dataset": convention["dataset"],
                "input_shape": list(net.input_shape),
                "num_classes": net.num_classes,
                "params_total": count_parameters(net)["total"],
                "params_parts": part_parameters(net),
                "macs": macs,
                "flops": {b: 2 * v for b, v in macs.items()},
            }
        )
    return {
        "id": mid,
        "paper": paper,
        "model": model,
        "primary": s["primary"],
        "why": s["why"],
        "conventions": rows,
        "code_version": code_version(),
    }


def primary(result: dict) -> dict:
    name = result["primary"]["convention"]
    return next(c for c in result["conventions"] if c["name"] == name)


def claim_value(claim, result: dict) -> float:
    """The reproduced value of a parameter or FLOPs cell from its measurement, in the cell's unit."""
    conv = primary(result)
    if claim.metric == "params":
        return float(conv["params_parts"][claim.part] if claim.part else conv["params_total"])
    if claim.metric == "flops" and claim.unit == "MMac":
        return conv["macs"][result["primary"]["backend"]] / 1e6
    raise ValueError(f"no model measurement gives {claim.metric} in {claim.unit}")


def result_path(profile: str, mid: str, results: Path | str = "results") -> Path:
    return Path(results) / profile / "models" / f"{mid}.json"


def inventory(paper: str | None = None, progress=None) -> list[dict]:
    """Every model a cell names, as configured for each dataset it is used on (full width): its parameters, its
    forward MACs at its input size (ptflops, module count) and the cells that use it. `progress(i, n, name)` is
    called before each model is built and counted (minutes for all of them on a CPU)."""
    from collections import defaultdict

    from bench.claims.datasets import DATASETS
    from bench.models import build_model
    from bench.models import missing_reason as model_missing
    from bench.run.measure import count_parameters, forward_macs

    uses = defaultdict(list)
    for c in load_claims():
        if paper and c.paper != paper or not c.model:
            continue
        dataset = c.dataset or spec(c.paper)["conventions"][0]["dataset"]
        uses[(c.paper, c.model, dataset)].append(c.id)
    rows = []
    for i, ((p, model, dataset), cells) in enumerate(sorted(uses.items())):
        if progress:
            progress(i, len(uses), f"{p} {model} on {dataset}")
        cfg, _ = ex.paper_config(ex.Experiment(p, dataset, model, "backprop"))
        info = DATASETS[dataset]
        shape = (cfg["input_size"],) if info.kind == "text" else (info.channels, cfg["input_size"], cfg["input_size"])
        row = {
            "paper": p,
            "model": model,
            "dataset": dataset,
            "input": "x".join(map(str, shape)),
            "classes": info.num_classes,
            "params": "",
            "mmac": "",
            "cells": cells,
            "note": "",
        }
        why = model_missing(cfg["architecture"])
        if why:
            row["note"] = why
        else:
            net = build_model(
                cfg["architecture"],
                info.channels,
                info.num_classes,
                cfg["input_size"],
                dict(cfg["model"], width_mult=1.0),
            )
            row["params"] = count_parameters(net)["total"]
            row["mmac"] = forward_macs(net) / 1e6
        rows.append(row)
    return rows


def print_inventory(paper: str | None, fmt: str):
    """`bench models`: `inventory` as a table or CSV, saying on stderr which model it is counting."""
    import sys

    def progress(i, n, name):  # building and counting every model takes minutes: say where it is, on stderr
        print(f"\rmodel {i + 1}/{n}: {name}".ljust(72)[:72], end="" if i + 1 < n else "\n", file=sys.stderr, flush=True)

    rows = inventory(
        paper,
        progress=progress
        if sys.stderr.isatty()
        else lambda i, n, name: (
            print(f"model {i + 1}/{n}: {name}", file=sys.stderr, flush=True) if i % 10 == 0 or i + 1 == n else None
        ),
    )
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["paper", "model", "dataset", "input", "classes", "params", "mmac", "cells", "note"])
        for r in rows:
            writer.writerow(
                [
                    r["paper"],
                    r["model"],
                    r["dataset"],
                    r["input"],
                    r["classes"],
                    r["params"],
                    f"{r['mmac']:.2f}" if r["mmac"] != "" else "",
                    " ".join(r["cells"]),
                    r["note"],
                ]
            )
        return
    from tabulate import tabulate

    table = [
        [
            r["paper"],
            r["model"],
            r["dataset"],
            r["input"],
            r["classes"],
            f"{r['params']:,}" if r["params"] != "" else "-",
            f"{r['mmac']:,.2f}" if r["mmac"] != "" else "-",
            len(r["cells"]),
            r["note"],
        ]
        for r in rows
    ]
    print(
        tabulate(
            table, headers=["paper", "model", "dataset", "input", "classes", "parameters", "MMac", "cells", "note"]
        )
    )


def measure_to_file(mid: str, profile: str, results: Path | str = "results", out: Path | str | None = None) -> str:
    """`bench measure`: measure `mid`, check it as aggregate will, write its file (default results/<profile>/models/
    <mid>.json); returns the line that says what was counted and where it went."""
    from bench.run import results as result_files

    result = measure(mid)
    paper, model = measurements()[mid]
    try:  # what aggregate will accept, checked before anything is written
        result_files.validate_measurement(result, mid, paper, model, spec(paper))
    except result_files.Invalid as err:
        raise BenchError(f"measurement {mid} {err}") from None
    path = Path(out) if out else result_path(profile, mid, results)
    result_files.write_json_atomic(path, result)
    conv = primary(result)
    return (
        f"{mid}: {conv['params_total']:,} parameters, {conv['macs'][result['primary']['backend']] / 1e6:,.2f} MMac "
        f"({conv['name']}, {result['primary']['backend']}); {len(result['conventions'])} conventions -> {path}"
    )
