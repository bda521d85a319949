"""Concurrency: 16 smoke jobs at once, all logging into one SQLite MLflow store; nothing may be lost or doubled."""
import json

import pytest

from test_workflow import job_counts, snakemake

EXPERIMENTS = ["ma-cifar10-vgg8-backprop", "ma-cifar100-vgg8-backprop", "cruciata-mnist-vgg11-backprop",
               "bhyravabhottla-cifar10-cnn12-backprop"]
SEEDS = 4  # 4 experiments x 4 seeds = 16 jobs, all running at once (--cores 16, one thread each)


@pytest.mark.slow
def test_sixteen_parallel_jobs_lose_no_run(tmp_path):
    proc = snakemake(tmp_path, "--cores", "16", "--config", "profile=smoke", f"seeds={SEEDS}",
                     f"only={','.join(EXPERIMENTS)}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert job_counts(log)["train"] == 16

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith("layerwise-bench/smoke/")]
    runs = client.search_runs(ids, max_results=1000)
    keys = sorted((r.data.tags["experiment"], r.data.tags["seed"]) for r in runs)
    assert keys == sorted((e, str(s)) for e in EXPERIMENTS for s in range(SEEDS))  # each exactly once
    for r in runs:
        result = json.loads((tmp_path / "results/smoke/runs" / r.data.tags["experiment"]
                             / f"seed{r.data.tags['seed']}.json").read_text())
        assert result["mlflow"]["run_id"] == r.info.run_id and result["mlflow"]["error"] is None
        assert r.info.status == "FINISHED"
        assert r.data.metrics["final_test_accuracy"] == result["metrics"]["test_accuracy"]
        assert len(r.data.params) > 10  # the whole config
        history = client.get_metric_history(r.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == [e["epoch"] for e in result["epochs"]]  # every epoch, once
