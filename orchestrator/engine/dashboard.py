"""The sweep on the Ray dashboard: Prometheus metrics from the driver, named after the sweep.

    ray metrics launch-prometheus          # then Grafana, or the dashboard's Metrics tab, shows fewshot_*

The driver's callbacks feed them as Tune reports: trials running and finished per sweep, cell and
status; each running trial's epoch, dev accuracy and training tokens per second; each finished
trial's peak memory and serving cost. Ray's metrics agent on the driver's node exports them with
Ray's own (`--metrics-export-port`). The Train tab lists every trial's run when the cluster runs with
RAY_TRAIN_ENABLE_STATE_TRACKING=1 (the cluster files and the local instance set it).
"""
from __future__ import annotations

import time

from ray.util import metrics

from trainers.contract import Record, TrialSpec

PREFIX = "fewshot_"


class SweepMetrics:
    def __init__(self, sweep: str):
        self.sweep = sweep
        tags = ("sweep", "cell", "phase")
        self.running = metrics.Gauge(f"{PREFIX}trials_running", "trials of the sweep running now", tag_keys=("sweep",))
        self.finished = metrics.Counter(f"{PREFIX}trials_finished", "trials finished, by status",
                                        tag_keys=("sweep", "cell", "phase", "status"))
        self.epoch = metrics.Gauge(f"{PREFIX}trial_epoch", "last epoch a running trial reported", tag_keys=(*tags, "trial"))
        self.dev = metrics.Gauge(f"{PREFIX}trial_dev_accuracy", "dev accuracy of a trial's last epoch",
                                 tag_keys=(*tags, "trial"))
        self.tokens = metrics.Gauge(f"{PREFIX}trial_tokens_per_second", "training tokens per second of a trial's last "
                                    "epoch", tag_keys=(*tags, "trial"))
        self.memory = metrics.Gauge(f"{PREFIX}trial_peak_memory_mib", "peak memory of a finished trial", tag_keys=tags)
        self.serve = metrics.Gauge(f"{PREFIX}serve_ms_per_query", "serving cost of a finished replicate", tag_keys=tags)
        self.now = 0
        self.last: dict[tuple, tuple] = {}  # (gauge name, tags) -> (gauge, value): set again between scrapes
        self.refreshed = 0.0

    def _set(self, gauge, value: float, tags: dict) -> None:
        gauge.set(value, tags=tags)
        self.last[(gauge.info["name"], tuple(sorted(tags.items())))] = (gauge, value, tags)

    def refresh(self, every_s: float = 5.0) -> None:
        """Set every gauge's last value again: Ray exports a gauge only for the intervals it was set in,
        so between a trial's start and its end (or its next epoch) the running count and the trial's
        gauges would drop out of the scrapes. Called from the driver's loop, at most every `every_s`."""
        now = time.monotonic()
        if now - self.refreshed < every_s:
            return
        self.refreshed = now
        for gauge, value, tags in list(self.last.values()):
            gauge.set(value, tags=tags)

    def _tags(self, spec: TrialSpec, trial_id: str | None = None) -> dict:
        out = {"sweep": self.sweep, "cell": spec.cell, "phase": spec.phase}
        return {**out, "trial": trial_id} if trial_id else out

    def started(self) -> None:
        self.now += 1
        self._set(self.running, self.now, {"sweep": self.sweep})

    def epoch_done(self, config: TrialSpec, trial_id: str, result: dict) -> None:
        tags = self._tags(config, trial_id)
        self._set(self.epoch, float(result.get("epoch", 0)), tags)
        if result.get("dev_accuracy") is not None:
            self._set(self.dev, float(result["dev_accuracy"]), tags)
        if result.get("tokens_per_second"):
            self._set(self.tokens, float(result["tokens_per_second"]), tags)

    def trial_done(self, config: TrialSpec, record: Record) -> None:
        trial = record.tune_trial_id  # its per-trial gauges stop being refreshed: it runs no more
        self.last = {k: v for k, v in self.last.items() if ("trial", trial) not in k[1]}
        self.now = max(0, self.now - 1)
        self._set(self.running, self.now, {"sweep": self.sweep})
        self.finished.inc(tags={**self._tags(config), "status": record.status})
        res = record.resources
        if res.peak_memory_mib:
            self._set(self.memory, float(res.peak_memory_mib), self._tags(config))
        if res.serving and res.serving.ms_per_query:
            self._set(self.serve, float(res.serving.ms_per_query), self._tags(config))
