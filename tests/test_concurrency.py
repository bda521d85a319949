"""Concurrency: 16 smoke jobs at once, all logging into one SQLite MLflow store; nothing may be lost or doubled.
The DAG is the session's small one (conftest.small_dag: 4 experiments x 4 seeds, --cores 16, one thread each)."""

import json

import pytest
from conftest import SMALL_DAG_EXPERIMENTS as EXPERIMENTS
from conftest import SMALL_DAG_SEEDS as SEEDS
from test_workflow import job_counts


@pytest.mark.slow
def test_sixteen_parallel_jobs_lose_no_run(small_dag):
    tmp_path = small_dag.folder
    assert job_counts(small_dag.log)["train"] == len(EXPERIMENTS) * SEEDS == 16

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith("layerwise-bench/smoke/")]
    runs = client.search_runs(ids, max_results=1000)
    keys = sorted((r.data.tags["experiment"], r.data.tags["seed"]) for r in runs)
    assert keys == sorted((e, str(s)) for e in EXPERIMENTS for s in range(SEEDS))  # each exactly once
    for r in runs:
        result = json.loads(
            (
                tmp_path / "results/smoke/runs" / r.data.tags["experiment"] / f"seed{r.data.tags['seed']}.json"
            ).read_text()
        )
        assert result["mlflow"]["run_id"] == r.info.run_id and result["mlflow"]["error"] is None
        assert r.info.status == "FINISHED"
        assert r.data.metrics["final_test_accuracy"] == result["metrics"]["test_accuracy"]
        assert len(r.data.params) > 10  # the whole config
        history = client.get_metric_history(r.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == [e["epoch"] for e in result["epochs"]]  # every epoch, once
