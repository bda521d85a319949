"""Which experiments a profile runs: every experiment of the registry and the grids (bench.experiments) whose
method, model and dataset the suite implements, and whose grid does not limit it to other profiles. The workflow's
training jobs are these targets; the others stay in the reports as MISSING, with the reason `support` gives.
"""

from functools import cache

from bench import experiments as ex


@cache
def support(exp: ex.Experiment, profile: str) -> str:
    """'' when the suite can run this experiment under this profile, else the reason it cannot (yet)."""
    from bench.data import missing_reason as data_missing
    from bench.methods import missing_reason as method_missing
    from bench.models import missing_reason as model_missing

    limited = ex.companion_profiles().get(exp.id)
    runs_as = ex.profile_settings(profile).get("rehearses", profile)  # a rehearsal runs what its profile runs
    if limited is not None and runs_as not in limited:
        return f"a companion run only in the {', '.join(limited)} profile(s) (its grid's companions entry)"
    cfg_arch = ex.paper_config(exp)[0]["architecture"]
    for reason in (
        method_missing(exp.method),
        model_missing(cfg_arch),
        data_missing(exp.dataset, ex.profile_settings(profile)["data"]),
    ):
        if reason:
            return reason
    return ""


def targets(profile: str) -> list[str]:
    """Ids of the experiments this profile runs: every experiment the suite supports."""
    return [eid for eid, exp in ex.experiments().items() if not support(exp, profile)]


def print_experiments(profile: str, with_missing: bool = False):
    """`bench experiments`: the ids of the experiments the profile runs, one a line; `with_missing`: the others too,
    each with why it cannot run."""
    ex.profile_settings(profile)
    for eid, exp in ex.experiments().items():
        reason = support(exp, profile)
        if not reason:
            print(eid)
        elif with_missing:
            print(f"{eid}\tMISSING: {reason}")


@cache
def epochs_summary(profile: str, paper: str) -> str:
    """The epochs a profile trains a paper's experiments for, read from their resolved configs (what a report's
    footnotes and header say, never a fixed phrase): e.g. '8 epochs end to end; 2 per layer or stage'."""
    ends, stages = set(), set()
    for eid in targets(profile):
        if eid.split("-")[0] == paper:
            cfg = ex.config(ex.get(eid), profile)
            ends.add(cfg["epochs"])
            opts = cfg["method_options"]
            stages.update(opts[k] for k in ("epochs_per_layer", "epochs_per_stage") if k in opts)
    span = lambda xs: f"{min(xs):,}" if len(xs) == 1 else f"{min(xs):,}-{max(xs):,}"  # noqa: E731
    if not ends:
        return "no experiments"
    return f"{span(ends)} epochs end to end" + (f"; {span(stages)} per layer or stage" if stages else "")
