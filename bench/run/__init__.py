"""Stage 6, the jobs: which experiments a profile runs (targets.py), `bench run` around a method (runner.py; its
lock and SIGTERM handling, lock.py; its epoch records, epoch_log.py) and its result file (results.py), what a run
measures besides its metrics (measure.py), `bench measure` of the models a parameter or FLOPs cell names
(deterministic.py), MLflow tracking (track.py, sync.py, ui.py), the warm worker and GPU slots (worker.py, gpus.py),
the runs that failed for good (failed.py), and what runs in progress say (progress.py: the start and epoch lines, a
progress file per run; status.py: `bench status`)."""
