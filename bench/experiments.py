"""Experiments: the unique training runs behind the registry's cells, their configs and profiles.

An experiment is one (paper, dataset, model, method, variant): its id reads
`<paper>-<dataset>-<model>-<method>[-<variant>]` (e.g. `cruciata-cifar10-resnet18-learn_drop`) and never
changes with the profile. Many cells share one experiment (Learn & Drop's time, accuracy and time saving come
from one run). The set of experiments is derived from the registry, never listed by hand.

The config of an experiment is the paper's grid (bench/grids/<paper>.yaml) resolved for it, then scaled by
the profile (bench/profiles.yaml). Each setting keeps its source (paper, code or a documented choice).
"""

import copy
import csv
import fnmatch
import hashlib
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bench import BenchError
from bench.claims.datasets import DATASETS
from bench.claims.registry import load_claims

GRIDS_DIR = Path(__file__).parent / "grids"
PROFILES_FILE = Path(__file__).parent / "profiles.yaml"


@dataclass(frozen=True, order=True)
class Experiment:
    paper: str
    dataset: str
    model: str
    method: str
    variant: str = ""

    @property
    def id(self) -> str:
        return "-".join([self.paper, self.dataset, self.model, self.method] + ([self.variant] if self.variant else []))


@cache
def profiles() -> dict:
    from bench.schema import load

    return load(PROFILES_FILE, "profiles")


def dag_profiles() -> list[str]:
    """The profiles a workflow runs: every profile but a rehearsal (`rehearses`: bench rehearse runs it, no DAG)."""
    return [name for name, settings in profiles().items() if "rehearses" not in settings]


def profile_settings(name: str) -> dict:
    if name not in profiles():
        raise BenchError(f"unknown profile '{name}': choose one of {', '.join(profiles())}")
    return profiles()[name]


@cache
def grid(paper: str) -> dict:
    path = GRIDS_DIR / f"{paper}.yaml"
    if not path.exists():
        raise BenchError(f"no experiment grid for paper '{paper}' ({path})")
    from bench.schema import load

    return load(path, "grid")


def experiments(claims=None) -> dict[str, Experiment]:
    """Every experiment some cell is measured on (including the baselines of relative cells), and the companion
    runs the grids add beside them (`companions`), by id."""
    found = cell_experiments(claims)
    found.update({eid: exp for eid, (exp, _, _) in companions(tuple(found.values())).items()})
    return dict(sorted(found.items()))


def cell_experiments(claims=None) -> dict[str, Experiment]:
    keys = set()
    for c in claims if claims is not None else load_claims():
        keys.update(k for k in (c.experiment_key(), c.baseline_key()) if k)
    return {e.id: e for e in sorted(Experiment(*k) for k in keys)}


def cells_of(experiment_id: str) -> list:
    """The claims measured on this experiment, directly or as the baseline of a relative cell."""
    out = []
    for c in load_claims():
        keys = [k for k in (c.experiment_key(), c.baseline_key()) if k]
        if any(Experiment(*k).id == experiment_id for k in keys):
            out.append(c)
    return out


def companions(named: tuple[Experiment, ...] = ()) -> dict[str, tuple[Experiment, str, str]]:
    """Runs no cell names that a fair reading of a paper's cells needs (the dataset the authors' code really trains,
    an equal-epoch baseline): id -> (experiment, id of the experiment it stands beside, why). Declared per paper in
    the grid's `companions` list: each entry takes the experiments matching `of` (the cells' experiments and the
    earlier companions of that paper), replaces the fields in `set`, and says `why`. `named`: the cells'
    experiments (default: the registry's)."""
    return {eid: entry[:3] for eid, entry in companion_entries(named).items()}


def companion_profiles() -> dict[str, list[str]]:
    """Companion id -> the profiles it runs in, for the companions a grid limits (`profiles:` in its entry; a fork
    cheap enough to settle in the `scaled` profile need not cost the `paper` profile's GPU-hours)."""
    return {eid: entry[3] for eid, entry in companion_entries().items() if entry[3] is not None}


def companion_charge_epochs() -> dict[str, int]:
    """Companion id -> the epochs `bench plan` charges it, for the companions whose grid entry says they stop early
    (`charge_epochs`: a reading that diverges)."""
    return {eid: entry[4]["charge_epochs"] for eid, entry in companion_entries().items() if "charge_epochs" in entry[4]}


def companion_readings() -> dict[str, tuple[str, str, str]]:
    """Companion id -> (id of the experiment it stands beside, the reading it changes as 'field=value' (e.g.
    'variant=growing', 'dataset=cifar10'), what states that reading: 'text', 'code' or 'choice' (its entry's
    `basis`))."""
    return {
        eid: (entry[1], " + ".join(f"{k}={v}" for k, v in sorted(entry[4]["set"].items())), entry[4]["basis"])
        for eid, entry in companion_entries().items()
    }


@cache
def companion_entries(named: tuple[Experiment, ...] = ()) -> dict[str, tuple[Experiment, str, str, list | None, dict]]:
    """`companions` with each entry's `profiles` (None: every profile) and the grid entry itself."""
    named = named or tuple(cell_experiments().values())
    out: dict[str, tuple[Experiment, str, str, list | None, dict]] = {}
    for paper in sorted({e.paper for e in named}):
        pool = [e for e in named if e.paper == paper]
        for i, entry in enumerate(grid(paper).get("companions", [])):
            if (
                not entry.get("why")
                or not isinstance(entry.get("set"), dict)
                or not entry["set"]
                or set(entry["set"]) - {"dataset", "method", "variant"}
            ):
                raise BenchError(
                    f"{paper}.yaml: companions entry {i + 1} needs 'of', 'set' (dataset, method and/or "
                    "variant) and 'why'"
                )
            for exp in list(pool):
                if _matches(entry.get("of", {}), exp):
                    new = Experiment(**{**exp.__dict__, **entry["set"]})
                    if new not in pool:
                        out[new.id] = (new, exp.id, " ".join(entry["why"].split()), entry.get("profiles"), entry)
                        pool.append(new)
    return out


_KNOWN: dict = {}  # experiments() of the registry's claims, kept while load_claims() gives the same claims


def get(experiment_id: str) -> Experiment:
    claims = load_claims()
    key = tuple(map(id, claims))  # the registry's claims are loaded once (cached); the same objects, the same ids
    if _KNOWN.get("key") != key:
        _KNOWN.update(key=key, experiments=experiments(claims))
    found = _KNOWN["experiments"].get(experiment_id)
    if found is None:
        hint = did_you_mean(experiment_id, _KNOWN["experiments"])
        raise BenchError(
            f"unknown experiment '{experiment_id}': {hint + ' ' if hint else ''}`bench experiments --all` lists them"
        )
    return found


def did_you_mean(word: str, known) -> str:
    """ "did you mean 'x' or 'y'?" with the (at most three) closest of `known` to a mistyped `word`, else ''."""
    import difflib

    close = [f"'{c}'" for c in difflib.get_close_matches(word, list(known), n=3, cutoff=0.6)]
    return (
        f"did you mean {' or '.join([', '.join(close[:-1]), close[-1]] if len(close) > 1 else close)}?" if close else ""
    )


def _matches(match: dict, exp: Experiment) -> bool:
    for key, pattern in match.items():
        value = getattr(exp, key)
        patterns = pattern if isinstance(pattern, list) else [pattern]
        if not any(fnmatch.fnmatchcase(value, str(p)) for p in patterns):
            return False
    return True


def _merge(into: dict, update: dict, source: str, sources: dict, prefix: str = ""):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, source, sources, f"{prefix}{key}.")
        else:
            into[key] = copy.deepcopy(value)
            if isinstance(value, dict):
                for sub in value:
                    sources[f"{prefix}{key}.{sub}"] = source
            else:
                sources[prefix + key] = source


@cache
def check_matches(paper: str):
    """Every `match` of the paper's grid settings (and `of` of its companions) names a dataset, model, method or
    variant its experiments have, and together its fields match one of them: a typo (`model: lenett`) would
    otherwise match nothing, and the setting would vanish without a word. BenchError naming the file and entry."""
    import difflib

    from bench.schema import shown

    pool = [e for e in experiments().values() if e.paper == paper]
    if not pool:
        return
    g = grid(paper)
    for section, key in (("settings", "match"), ("companions", "of")):
        for i, entry in enumerate(g.get(section, [])):
            match = entry.get(key) or {}
            where = f"{shown(GRIDS_DIR / f'{paper}.yaml')}: {section} entry {i + 1}: {key}"
            for field, patterns in match.items():
                known = sorted({getattr(e, field) for e in pool})
                for pattern in patterns if isinstance(patterns, list) else [patterns]:
                    if not any(fnmatch.fnmatchcase(value, str(pattern)) for value in known):
                        close = difflib.get_close_matches(str(pattern), known, n=1, cutoff=0.6)
                        raise BenchError(
                            f"{where} {field} {pattern!r} names no {field} of the {paper} experiments"
                            + (
                                f"; did you mean {close[0]!r}?"
                                if close
                                else f" (they have {', '.join(repr(v) for v in known)})"
                            )
                        )
            if not any(_matches(match, e) for e in pool):
                raise BenchError(f"{where} {match} matches none of the {paper} experiments together")


def paper_config(exp: Experiment) -> tuple[dict, dict]:
    """(config, sources) of an experiment as the paper describes it, before any profile scaling."""
    check_matches(exp.paper)
    info = DATASETS[exp.dataset]
    cfg = {
        "normalize": {"mean": list(info.mean), "std": list(info.std)},
        "input_size": info.size,
        "augment": {"crop_padding": 0, "hflip": False},
        "model": {},
        "method_options": {},
    }
    sources = {"normalize.mean": "dataset default", "normalize.std": "dataset default", "input_size": "dataset default"}
    g = grid(exp.paper)
    for entry in g.get("settings", []):
        if _matches(entry.get("match", {}), exp):
            _merge(cfg, entry["set"], entry["source"], sources)
    cfg["architecture"] = copy.deepcopy(g.get("architectures", {}).get(exp.model, {"base": exp.model}))
    return cfg, sources


def scale_epochs(epochs: int, prof: dict) -> int:
    scaled = max(prof.get("min_epochs", 1), round(epochs * prof["epoch_scale"]))
    return min(scaled, prof.get("max_epochs", scaled))


def _experiment_profile(exp: Experiment, profile: str) -> dict:
    """The profile's settings for this experiment: its own, then its per_paper ones for the paper, then those of
    every per_experiment id pattern that matches, in order."""
    prof = dict(profile_settings(profile))
    prof.update(prof.get("per_paper", {}).get(exp.paper, {}))
    for pattern, settings in prof.get("per_experiment", {}).items():  # experiment id patterns, in order
        if fnmatch.fnmatchcase(exp.id, pattern):
            prof.update(settings)
    return prof


def _scale_schedule(cfg: dict, prof: dict, paper_epochs: int):
    """The paper's epochs scaled to the profile's, and with them the LR milestones and the method options that
    count epochs (stages, the classifier, warm-up, the classes-per-batch phase)."""
    epochs = scale_epochs(paper_epochs, prof)
    ratio = epochs / paper_epochs
    cfg["paper_epochs"] = paper_epochs
    cfg["epochs"] = epochs
    cfg["lr_milestones"] = sorted(
        {round(m * ratio) for m in cfg.get("lr_milestones", []) if 0 < round(m * ratio) < epochs}
    )
    stage_epochs = lambda n: min(scale_epochs(n, prof), prof.get("max_stage_epochs", n))  # noqa: E731
    if "equal_epochs" in cfg:  # a baseline as long as a staged run: stages x the profile's epochs per stage
        cfg["epochs"] = cfg["equal_epochs"]["stages"] * stage_epochs(cfg["equal_epochs"]["epochs_per_stage"])
    for key in ("epochs_per_layer", "epochs_per_stage"):
        if key in cfg["method_options"]:
            cfg["method_options"][key] = stage_epochs(cfg["method_options"][key])
    if "classifier_epochs" in cfg["method_options"]:  # a head trained by CE: scaled as end-to-end epochs are
        cfg["method_options"]["classifier_epochs"] = scale_epochs(cfg["method_options"]["classifier_epochs"], prof)
    if "warmup_epochs" in cfg["method_options"]:  # the same share of the run, and at most half of it
        warmup = max(1, round(cfg["method_options"]["warmup_epochs"] * ratio))
        cfg["method_options"]["warmup_epochs"] = min(warmup, max(1, epochs // 2))
    if cfg["method_options"].get("classes_per_batch_until_epoch"):  # scaled as the LR milestones, at least 1 epoch
        until = cfg["method_options"]["classes_per_batch_until_epoch"]
        cfg["method_options"]["classes_per_batch_until_epoch"] = min(epochs, max(1, round(until * ratio)))


def _profile_training(cfg: dict, sources: dict, prof: dict, profile: str):
    """The profile's learning-rate scale, batch size cap, width and model options, each change said in `sources`."""
    if prof.get("lr_scale", 1.0) != 1.0:  # smoke: a few dozen steps, each larger (bench/profiles.yaml says why)
        sources["lr"] = (
            f"profile {profile} (bench/profiles.yaml): {cfg['lr']:g} x {prof['lr_scale']:g}; the setting "
            f"it scales: {sources.get('lr', 'none')}"
        )
        cfg["lr"] = float(f"{cfg['lr'] * prof['lr_scale']:.12g}")  # 3e-4 x 10 is 0.003, not 0.0029999999999999996
    if prof.get("max_batch_size"):
        cfg["batch_size"] = min(cfg["batch_size"], prof["max_batch_size"])
    cfg["model"]["width_mult"] = prof.get("width_mult", 1.0)
    for key, value in prof.get("model", {}).items():  # model options the profile sets (smoke: no dropout)
        sources[f"model.{key}"] = (
            f"profile {profile} (bench/profiles.yaml): {cfg['model'].get(key, 'the model default')}"
            f" -> {value}; the setting it replaces: {sources.get(f'model.{key}', 'none')}"
        )
        cfg["model"][key] = value


# The run settings a profile may set (bench/profiles.yaml), each with what it does as the config's source says it:
# all change how, never what, a run computes.
RUN_SETTINGS = {
    "cudnn_benchmark": "cuDNN times its convolution algorithms on a run's first batches and keeps the fastest, as "
    "the N&E code does (`cudnn.benchmark = True`); the same operations, not bit-identical run to run; no effect off "
    "CUDA",
    "compile_step": "the whole training step (forward, local losses, backward, optimizer step) compiled by "
    "torch.compile (bench.methods.training.compiled_step): the same operations, fused; float rounding may differ",
    "random_draws": "each epoch's shuffle, crop offsets and flips drawn before its first batch and moved to the "
    "device in one copy (bench.data.loader.Batches): the same draws of the same generator in the same order, so the "
    "same batches, without a host sync per batch",
    "activation_checkpointing": "auto recomputes the blocks' activations in the backward only where the job would "
    "not fit its GPU otherwise (bench.cost.resources.recompute_rule): the same values and gradients, one more "
    "forward of the blocks per step",
    "optimizer_offload": "auto frees PredSim's gradients after each unit's step and keeps the largest units' "
    "optimizer states on the host only where the job would not fit its GPU otherwise (bench.methods.offload."
    "offload_rule): the same steps, exact copies",
    "checkpoint_writes": "each epoch's checkpoint written in a thread while the next epoch trains "
    "(bench/methods/checkpoint.py says what a kill may lose)",
}


def _profile_run_settings(cfg: dict, sources: dict, prof: dict, profile: str):
    """The profile's precision, cuDNN benchmarking, compiled step, activation recomputation, optimizer offload and
    checkpoint writes, where the grid sets none."""
    if "precision" in prof and "precision" not in cfg:  # a grid that sets it for an experiment wins
        cfg["precision"] = prof["precision"]
        sources["precision"] = (
            f"profile {profile}: fp32 as the papers trained (bench/profiles.yaml); bf16 is an "
            "opt-in, flagged in the report"
            if prof["precision"] == "fp32"
            else f"profile {profile} (bench/profiles.yaml)"
        )
    for key, why in RUN_SETTINGS.items():  # a grid that sets one for an experiment wins
        if key in prof and key not in cfg:
            cfg[key] = prof[key]
            sources[key] = f"profile {profile} (bench/profiles.yaml): {why}"


def _data_settings(cfg: dict, sources: dict, prof: dict, exp: Experiment, profile: str) -> tuple[dict, str | None]:
    """(cfg["data"]: the data source and the training and test samples, the note on a paper's reading of its
    training split or None); the grid's train_samples leaves cfg, and a rehearsal's budgets and options are set."""
    train_samples = prof.get("train_samples")
    read = cfg.pop("train_samples", None)  # a paper's reading of its training split (a grid setting)
    read_note = None
    if read is not None:
        whole = read >= DATASETS[exp.dataset].train_size
        if whole and train_samples is None:  # recorded, changes nothing
            read_note = f"the whole split: {sources['train_samples']}"
        elif not whole and (train_samples is None or read < train_samples):
            train_samples = read
            read_note = f"a fixed random subset of {read:,}: {sources['train_samples']}"
    test_samples = prof.get("test_samples")
    if prof.get("train_batches"):  # a rehearsal (bench rehearse): a few of the experiment's own batches
        full = (
            read if read is not None and read < DATASETS[exp.dataset].train_size else DATASETS[exp.dataset].train_size
        )
        train_samples = prof["train_batches"] * cfg["batch_size"]
        _scale_budgets(cfg, sources, prof, exp.method, train_samples / full, profile)
        _rehearsal_options(cfg, sources, exp.method)
    if prof.get("test_batches"):  # evaluation batches: 512 where the grid sets none (bench.methods.training)
        test_samples = prof["test_batches"] * cfg.get("eval_batch_size", 512)
    return {"source": prof["data"], "train_samples": train_samples, "test_samples": test_samples}, read_note


def config(exp: Experiment, profile: str) -> dict:
    """The full, resolved config of one experiment under one profile (what `bench run` trains and MLflow records)."""
    prof = _experiment_profile(exp, profile)
    cfg, sources = paper_config(exp)
    as_paper = copy.deepcopy(cfg)
    paper_epochs = cfg.get("epochs")
    if paper_epochs is None:
        raise BenchError(f"grid of {exp.paper} sets no epochs for {exp.id}")
    _scale_schedule(cfg, prof, paper_epochs)
    _profile_training(cfg, sources, prof, profile)
    _profile_run_settings(cfg, sources, prof, profile)
    data, read_note = _data_settings(cfg, sources, prof, exp, profile)
    cfg["data"] = data
    cfg.update(
        experiment=exp.id,
        paper=exp.paper,
        dataset=exp.dataset,
        model_name=exp.model,
        method=exp.method,
        variant=exp.variant,
        profile=profile,
    )
    cfg["sources"] = _profile_sources(sources, as_paper, cfg, profile)
    if read_note:
        cfg["sources"]["data.train_samples"] = read_note
    cfg["sources"].pop("train_samples", None)
    return cfg


def _scale_budgets(cfg: dict, sources: dict, prof: dict, method: str, ratio: float, profile: str):
    """A rehearsal's size-dependent budgets (method options in MB) times its share of the full training split, so
    that what the full run holds, spills or streams the rehearsal does too (bench/profiles.yaml)."""
    for key, methods in prof.get("scale_budgets", {}).items():
        if method in methods:
            given = float(cfg["method_options"].get(key, prof.get("budget_default_mb", 8192)))
            cfg["method_options"][key] = given * ratio
            sources[f"method_options.{key}"] = (
                f"profile {profile} (bench/profiles.yaml): {given:g} MB x {ratio:.3g} "
                "(the rehearsal's training samples over the full run's)"
            )


REHEARSAL_OPTIONS = "BENCH_REHEARSAL_OPTIONS"  # method options `bench rehearse` sizes per job (JSON)


def _rehearsal_options(cfg: dict, sources: dict, method: str):
    """A rehearsal's per-job method options from $BENCH_REHEARSAL_OPTIONS ({"si_forward": {"pair_search_max_mb":
    60}}), for this method only; set by `bench rehearse` (bench.cost.rehearse.pair_search_mb says how)."""
    import os

    given = os.environ.get(REHEARSAL_OPTIONS)
    if not given:
        return
    try:
        options = json.loads(given).get(method, {})
    except (ValueError, AttributeError):
        raise BenchError(f"${REHEARSAL_OPTIONS}: not a JSON object of method -> options: {given[:80]!r}") from None
    for key, value in options.items():
        cfg["method_options"][key] = value
        sources[f"method_options.{key}"] = f"bench rehearse (${REHEARSAL_OPTIONS}): sized for this job's rehearsal"


SCALED_KEYS = (
    "epochs",
    "lr_milestones",
    "batch_size",
    "method_options.epochs_per_layer",
    "method_options.epochs_per_stage",
    "method_options.classifier_epochs",
    "method_options.warmup_epochs",
    "method_options.classes_per_batch_until_epoch",
)


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _profile_sources(sources: dict, as_paper: dict, cfg: dict, profile: str) -> dict:
    """Each value credited to the layer that set it: a value the profile scaled names the profile and what it was
    (with the grid's source of the original); the width and the data are the profile's."""
    out = dict(sources)
    where = f"profile {profile} (bench/profiles.yaml)"
    for key in SCALED_KEYS:
        old, new = _get(as_paper, key), _get(cfg, key)
        if new is not None and old != new:
            was = sources.get(key)
            out[key] = f"{where}: {old} -> {new}" + (f"; the setting it scales: {was}" if was else "")
    out["model.width_mult"] = f"{where}: every width x {cfg['model']['width_mult']:g}"
    data = cfg["data"]
    out["data.source"] = f"{where}: {data['source']} data"
    for split in ("train_samples", "test_samples"):
        out[f"data.{split}"] = (
            f"{where}: {data[split]:,} stand-in samples"
            if data["source"] == "synthetic"
            else f"{where}: a fixed random subset of {data[split]:,}"
            if data[split]
            else f"{where}: the whole split"
        )
    return out


def config_hash(cfg: dict) -> str:
    """A short digest of what a config trains (its provenance text aside); Snakemake reruns a job when it changes."""
    trains = {k: v for k, v in cfg.items() if k != "sources"}
    return hashlib.sha256(json.dumps(trains, sort_keys=True).encode()).hexdigest()[:16]


def describe_config(exp: Experiment, profile: str) -> str:
    """`bench config`: one line per setting (its value, its source); each grid source, and any source several
    settings share, printed once below as a numbered note ([1], [2], ...) that the settings it set, or that a profile
    scaled from it, point to."""
    import textwrap
    from collections import Counter

    cfg = config(exp, profile)
    sources = cfg.pop("sources")
    shared = {text for text, n in Counter(sources.values()).items() if n > 1}
    notes = sorted(set(paper_config(exp)[1].values()) | shared, key=len, reverse=True)
    numbers: dict[str, int] = {}

    def cited(text: str) -> str:  # a grid source as its note's number; a profile's text keeps its own part
        for note in notes:
            if text == note or text.endswith(": " + note):
                return text[: len(text) - len(note)] + f"[{numbers.setdefault(note, len(numbers) + 1)}]"
        return text

    def flat(d: dict, prefix=""):
        for key, value in d.items():
            if isinstance(value, dict) and value:
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield prefix + key, value if isinstance(value, str) else json.dumps(value)

    rows = [(key, value, cited(sources.pop(key, ""))) for key, value in flat(cfg)]
    rows += [(key, "(not set)", cited(text)) for key, text in sources.items()]
    width = max(len(k) for k, _, _ in rows) + 2
    value_width = min(28, max(len(v) for _, v, _ in rows)) + 2
    lines = [
        f"{exp.id} under the {profile} profile: each setting, its value and its source ([n]: the notes below; "
        "--format json: the config as a run records it)",
        "",
    ]
    lines += [f"{key:<{width}}{value:<{value_width}}{source}".rstrip() for key, value, source in rows]
    lines += ["", "notes:"]
    lines += [
        textwrap.fill(note, 118, initial_indent=f"[{n}] ", subsequent_indent=" " * (len(str(n)) + 3))
        for note, n in sorted(numbers.items(), key=lambda kv: kv[1])
    ]
    return "\n".join(lines)


def seeds(profile: str, override=None) -> list[int]:
    """Seeds of a profile: its default count, or `override`: an int count, a list, or a "0,1,2" string list."""
    if override in (None, ""):
        override = profile_settings(profile)["seeds"]
    if isinstance(override, str):
        try:
            override = [int(s) for s in override.replace(",", " ").split()]
        except ValueError:
            raise BenchError(f"seeds must be a count or a list of integers, got '{override}'") from None
    if isinstance(override, bool) or not isinstance(override, (int, list)):
        raise BenchError(f"seeds must be a count or a list of integers, got {override!r}")
    if isinstance(override, int):
        if override < 1:
            raise BenchError(f"seeds must be at least 1, got {override}")
        return list(range(override))
    if not override or any(not isinstance(s, int) or s < 0 for s in override):
        raise BenchError(f"seeds must be a non-empty list of non-negative integers, got {override!r}")
    return sorted(set(override))


CLAIM_COLUMNS = [
    "paper",
    "table",
    "row",
    "column",
    "dataset",
    "model",
    "method",
    "variant",
    "metric",
    "printed",
    "value",
    "unit",
    "experiment",
    "baseline_experiment",
    "id",
    "derived_from",
    "note",
]


def claim_rows(paper: str | None = None) -> list[dict]:
    """The registry's cells (of one paper), each with the ids of the experiment it is measured on and of its
    baseline's ('' for none): what `bench claims` lists."""
    rows = []
    for c in load_claims():
        if paper and c.paper != paper:
            continue
        key, base = c.experiment_key(), c.baseline_key()
        rows.append(
            {
                **c.row_dict(),
                "experiment": Experiment(*key).id if key else "",
                "baseline_experiment": Experiment(*base).id if base else "",
            }
        )
    return rows


def print_claims(paper: str | None, fmt: str):
    """`bench claims`: the cells as CSV, JSON or a table of their ids, printed values and experiments."""
    rows = claim_rows(paper)
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, CLAIM_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif fmt == "json":
        json.dump(rows, sys.stdout, indent=1, ensure_ascii=False)
        print()
    else:
        from tabulate import tabulate

        cols = ["id", "printed", "unit", "metric", "experiment"]
        print(tabulate([[r[k] for k in cols] for r in rows], headers=cols))
