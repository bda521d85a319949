"""What the MLflow UI opens on (issue 31): experiments of the training-runs kind, short run names, the values the
cells read as metrics beside the paper's printed values, `bench ui`'s links to each experiment's runs, and MLflow URI
errors as the suite's one line. No training: SQLite stores in tmp_path, runs logged by hand or synced from result
files written here."""

import json
from pathlib import Path

import mlflow
import pytest
from helpers import result_file
from pg_mlflow import free_port

from bench import experiments as ex
from bench.claims.registry import load_claims
from bench.run import track, ui
from bench.run.results import run_path
from bench.run.sync import sync
from bench.verdicts.aggregate import metric_value

MLFLOW_JS = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
LIVE = "karimi-cifar10-lenet-backprop-adam"  # a smoke experiment with accuracy and time cells
TIMED_WITH_EVAL = "bhyravabhottla-cifar100-cnn12-backprop"  # timing: fit_with_validation, memory cells
TEXT = "karimi-ag_news-vdcnn9-si_forward"  # test error cells


def client(path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{path}")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    return db


def test_the_kind_is_the_uis_training_runs_kind():
    """The value set is the one the installed UI bundle names CUSTOM_MODEL_DEVELOPMENT (its "Machine learning"
    kind, opened on its runs), read from the UI's own source, so an MLflow upgrade that renames it fails here."""
    bundle = "".join(p.read_text(errors="replace") for p in MLFLOW_JS.glob("main.*.js"))
    assert f'CUSTOM_MODEL_DEVELOPMENT="{track.EXPERIMENT_KIND}"' in bundle
    assert f'"{track.EXPERIMENT_KIND_TAG}"' in bundle
    # the runs page's shared view state: an experiment tag with this prefix, opened by this link parameter
    assert '"mlflow.sharedViewState."' in bundle and '"viewStateShareKey"' in bundle
    assert track.RUNS_VIEW_TAG.startswith("mlflow.sharedViewState.")


def test_experiments_are_created_and_kept_of_the_training_runs_kind(store):
    mlflow = client(store)
    old = mlflow.create_experiment(track.experiment_name("smoke", "ma"))  # made before the kind was set
    mine = mlflow.create_experiment(
        track.experiment_name("smoke", "cruciata"), tags={track.EXPERIMENT_KIND_TAG: "genai_development"}
    )  # a user's own choice
    ids = track.setup("smoke", ["karimi", "ma", "cruciata"])
    kinds = {p: mlflow.get_experiment(i).tags.get(track.EXPERIMENT_KIND_TAG) for p, i in ids.items()}
    assert kinds == {
        "karimi": "custom_model_development",
        "ma": "custom_model_development",
        "cruciata": "genai_development",
    }
    assert (ids["ma"], ids["cruciata"]) == (old, mine)


def own_cells(experiment: str) -> list:
    exp = ex.get(experiment)
    return [
        c for c in load_claims() if c.experiment_key() == (exp.paper, exp.dataset, exp.model, exp.method, exp.variant)
    ]


@pytest.mark.parametrize("experiment", [LIVE, TIMED_WITH_EVAL, TEXT])
def test_the_cell_metrics_are_what_aggregate_reads(experiment):
    """cell_<metric>_<unit> per kind of cell the run is measured for: the value bench.verdicts.aggregate reads from
    the run, in the cell's unit; claimed_<metric>_<unit> the registry's printed strings."""
    epochs = [{"epoch": k, "epoch_time_s": 2.0 + k, "eval_time_s": 0.5} for k in (1, 2, 3)]
    result = result_file(
        "smoke",
        experiment,
        metrics={"test_accuracy": 61.25, "train_time_s": 12.0, "peak_memory_mb": 900.0, "host_rss_after_mb": 2048.0},
        epochs=epochs,
    )
    cells = own_cells(experiment)
    assert cells
    tags = track.claimed_tags(ex.get(experiment), ex.cells_of(experiment))
    values = track.cell_metrics(track.cell_keys(tags), result["metrics"], result["config"], result["epochs"])
    for c in cells:
        key = track.CELL_KEYS[(c.metric, c.unit)]
        assert c.printed in tags[f"claimed_{key}"].split(" | ")
        assert values[f"cell_{key}"] == pytest.approx(metric_value(c, result)), c.id
    assert set(values) == {f"cell_{track.CELL_KEYS[(c.metric, c.unit)]}" for c in cells}


def test_a_live_run_has_a_short_name_its_cells_values_and_printed_values(store):
    exp = ex.get(LIVE)
    cells = ex.cells_of(LIVE)
    tags = track.run_tags(exp, 0, "smoke", cells, {"device": "cpu"}, {})
    logger = track.RunLogger("smoke", exp.paper, track.legacy_run_name(LIVE, 0), tags, ex.config(exp, "smoke"))
    for epoch in (1, 2):
        logger.log_metrics({"train_loss": 1.0 / epoch, "epoch_time_s": 1.5, "eval_time_s": 0.2}, step=epoch)
    logger.log_final({"test_accuracy": 70.0, "train_time_s": 90.0, "peak_memory_mb": 100.0})
    logger.finish()
    assert logger.error is None
    run = client(store).get_run(logger.run_id)
    assert run.info.run_name == "backprop-adam lenet cifar10 seed0" == track.run_name(tags)
    assert run.data.tags["experiment"] == LIVE
    printed = {c.printed for c in own_cells(LIVE) if c.metric == "test_accuracy"}
    assert set(run.data.tags["claimed_test_accuracy_pct"].split(" | ")) == printed
    assert run.data.metrics["cell_test_accuracy_pct"] == 70.0 and run.data.metrics["cell_train_time_min"] == 1.5
    assert run.data.metrics["final_test_accuracy"] == 70.0  # the final metrics as before
    assert client(store).get_experiment(logger.experiment_id).tags[track.EXPERIMENT_KIND_TAG] == track.EXPERIMENT_KIND


def write_result(results: Path, experiment: str, seed: int, **extra) -> Path:
    result = result_file(
        "smoke",
        experiment,
        seed,
        metrics={"test_accuracy": 55.0, "train_time_s": 30.0},
        started="2026-01-02T03:04:05+00:00",
        finished="2026-01-02T03:05:05+00:00",
        cells=[c.id for c in ex.cells_of(experiment)],
        data={},
        **extra,
    )
    path = run_path("smoke", experiment, seed, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


def test_sync_names_new_runs_short_and_renames_old_ones(store, tmp_path):
    """A run created by sync is named as a live one; a run of an older store, named by the whole experiment id,
    is renamed and gets its cells' values and printed values; a second sync adds nothing."""
    write_result(tmp_path / "results", LIVE, 0)
    old_store = client(store)
    exp_id = old_store.create_experiment(track.experiment_name("smoke", "karimi"))
    old = old_store.create_run(
        exp_id, run_name=track.legacy_run_name(LIVE, 1), tags={"synced_from": f"run-{LIVE}-1"}
    ).info.run_id
    write_result(tmp_path / "results", LIVE, 1)
    counts = sync("smoke", tmp_path / "results")
    assert (counts["created"], counts["renamed"]) == (1, 1)
    runs = {r.data.tags["seed"]: r for r in old_store.search_runs([exp_id])}
    assert runs["1"].info.run_id == old
    for seed, run in runs.items():
        assert run.info.run_name == f"backprop-adam lenet cifar10 seed{seed}"
        assert run.data.metrics["cell_test_accuracy_pct"] == 55.0 and "claimed_test_accuracy_pct" in run.data.tags
    assert old_store.get_experiment(exp_id).tags[track.EXPERIMENT_KIND_TAG] == track.EXPERIMENT_KIND
    again = sync("smoke", tmp_path / "results")
    assert (again["created"], again["renamed"], again["points"], again["tags"]) == (0, 0, 0, 0)


class Exec(Exception):
    pass


def test_bench_ui_prints_a_link_to_each_experiments_runs(store, monkeypatch, capsys):
    """One link per experiment of the suite, to its runs with the suite's columns; an experiment of an older store
    (no kind, no view) gets them first."""
    ids = {
        "ma": client(store).create_experiment(track.experiment_name("smoke", "ma")),
        **track.setup("smoke", ["karimi"]),
    }
    client(store).create_experiment("someone else's")
    port = free_port()

    def execvp(file, args):
        raise Exec(args)

    monkeypatch.setattr(ui.os, "execvp", execvp)
    with pytest.raises(Exec) as done:
        ui.serve(port=port, store=f"sqlite:///{store}")
    assert f"sqlite:///{store}" in done.value.args[0]
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"layerwise-bench/smoke/{p}: http://127.0.0.1:{port}/#/experiments/{ids[p]}/runs?"
        f"workflowType=machine_learning&viewStateShareKey=layerwise-bench"
        for p in ("karimi", "ma")
    ]
    tags = client(store).get_experiment(ids["ma"]).tags
    assert tags[track.EXPERIMENT_KIND_TAG] == track.EXPERIMENT_KIND
    view = json.loads(tags["mlflow.sharedViewState.layerwise-bench"])
    assert {"metrics.`cell_test_accuracy_pct`", "tags.`claimed_test_accuracy_pct`"} <= set(view["selectedColumns"])


@pytest.mark.parametrize(
    "uri, says",
    [
        ("nonsense", "'nonsense': not a URI"),
        ("sqlite:///no/such/folder/mlflow.db", "no folder"),
        ("fooo://x", "unknown scheme fooo://"),
    ],
)
def test_a_tracking_uri_no_store_can_be_opened_at_is_one_line(tmp_path, monkeypatch, capsys, uri, says):
    """bench setup and bench sync: one line naming the URI and why, exit 2; nothing created (MLflow would make the
    SQLite file's folders, or a file store named `nonsense`)."""
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "results" / "smoke" / "runs").mkdir(parents=True)
    for argv in (["setup", "--profile", "smoke"], ["sync", "--profile", "smoke"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and uri.split("/")[0] in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_a_new_sqlite_store_is_said_once(tmp_path, capsys):
    db = tmp_path / "new.db"
    track.open_client(f"sqlite:///{db}")
    track.open_client(f"sqlite:///{db}")
    assert capsys.readouterr().err == f"created the MLflow store {db} (SQLite)\n"
