"""A run's `ctx.log_epoch`: every epoch record is kept for the result file, logged to MLflow at its epoch (with the
time it was logged, for `bench sync`) and said as one line with an ETA (bench/run/progress.py)."""

from bench.run import track

EPOCH_KEYS = ("epoch", "timestamp_ms")  # an epoch record's keys that are not metrics (its MLflow step and time)


class EpochLog:
    """Called with each epoch's record by the method (bench.methods.training.Context.log_epoch)."""

    def __init__(self, records: list, logger: track.RunLogger, progress):
        self.records = records  # the result file's epochs (a resumed run's start with the killed run's)
        self.logger = logger
        self.progress = progress  # the run's RunProgress

    def __call__(self, record: dict):
        record["timestamp_ms"] = track.now_ms()  # the record keeps the time its metrics were logged with
        self.records.append(record)
        self.logger.log_metrics(
            {k: v for k, v in record.items() if k not in EPOCH_KEYS},
            step=record["epoch"],
            timestamp_ms=record["timestamp_ms"],
        )
        self.progress.say(self.progress.epoch_line(record))
