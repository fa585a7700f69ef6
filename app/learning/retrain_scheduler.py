"""``micrec trainer``: a process of its own (never inside request workers) that runs
``micrec retrain`` on a schedule (``MICREC_TRAINER_INTERVAL_S``) and/or once enough new
interactions arrived (``MICREC_TRAINER_MIN_NEW_INTERACTIONS``, counted by the store's
``interaction_count``). Both are 0 by default: the trainer is off.

Each retrain runs as a child process (``python -m app.cli retrain``): its memory is
returned when it ends, a crash of it is one failed run, and SIGTERM stops it. A failed
run is logged and counted (``micrec_trainer_runs_total{outcome="failed"}``), never
fatal. The trainer's position (interaction count and time of the last run) is kept in
``<retrain_dir>/trainer-state.json`` so a restart neither forgets nor repeats work.

Prometheus metrics on ``MICREC_TRAINER_METRICS_HOST:PORT`` (its own registry):
``micrec_trainer_runs_total{outcome}`` (promoted, canary, refused, skipped, failed),
``micrec_trainer_last_run_timestamp_seconds``, ``micrec_trainer_last_run_duration_seconds``,
``micrec_trainer_gate_metric{model}`` (candidate, current: the last gate's values),
``micrec_trainer_running`` and ``micrec_trainer_new_interactions``.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from app.settings import Settings
from app.store.base import Store, StoreUnavailable
from model.fsio import atomic_write

log = logging.getLogger("micrec.trainer")
STATE_FILE = "trainer-state.json"
OUTCOMES = ("promoted", "canary", "refused", "skipped", "failed")
EXIT_OUTCOME = {0: "promoted", 3: "refused", 4: "skipped", 5: "canary"}


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "micrec_trainer_runs", "Retrain runs by outcome", ["outcome"], registry=r
        )
        for o in OUTCOMES:
            self.runs.labels(o)  # every outcome shows, 0 before it happens
        self.last_run = Gauge(
            "micrec_trainer_last_run_timestamp_seconds", "End of the last run", registry=r
        )
        self.duration = Gauge(
            "micrec_trainer_last_run_duration_seconds", "Duration of the last run", registry=r
        )
        self.gate = Gauge(
            "micrec_trainer_gate_metric",
            "The last gate's metric (MICREC_RETRAIN_METRIC) for candidate and current",
            ["model"],
            registry=r,
        )
        self.running = Gauge("micrec_trainer_running", "1 while a retrain runs", registry=r)
        self.new = Gauge(
            "micrec_trainer_new_interactions",
            "Interactions appended since the last run (at the last check)",
            registry=r,
        )


@dataclass
class SchedulerState:
    last_count: int
    last_run: float

    @classmethod
    def load(cls, path: Path, count: int, now: float) -> SchedulerState:
        try:
            doc = json.loads(path.read_text())
            return cls(int(doc["last_count"]), float(doc["last_run"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls(count, now)  # first start: wait for new data / one interval

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = json.dumps({"last_count": self.last_count, "last_run": self.last_run})
        atomic_write(path, lambda f: f.write(doc.encode()))


class RetrainScheduler:
    """The loop; ``command`` is the retrain command line (tests pass their own)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        command: list[str] | None = None,
        env_file: str | None = None,
    ) -> None:
        if settings.trainer_interval_s == 0 and settings.trainer_min_new_interactions == 0:
            raise ValueError(
                "the trainer is off: set MICREC_TRAINER_INTERVAL_S and/or "
                "MICREC_TRAINER_MIN_NEW_INTERACTIONS"
            )
        self.s = settings
        self.store = store
        self.command = command or [sys.executable, "-m", "app.cli", "retrain", "--quiet"]
        if env_file:
            self.command += ["--env-file", env_file]
        self.metrics = SchedulerMetrics()
        self.stop = threading.Event()
        self.state_path = Path(settings.retrain_dir) / STATE_FILE
        self.state: SchedulerState | None = None
        self._child: subprocess.Popen[str] | None = None

    def _count(self) -> int | None:
        try:
            return self.store.interaction_count()
        except StoreUnavailable as err:
            log.warning("trainer: cannot read the interaction count: %s", err)
            return None

    def due(self, now: float, count: int) -> str | None:
        """Why a run is due now ("schedule", "volume"), or None."""
        assert self.state is not None
        self.metrics.new.set(max(0, count - self.state.last_count))
        interval = self.s.trainer_interval_s
        if interval > 0 and now - self.state.last_run >= interval:
            return "schedule"
        need = self.s.trainer_min_new_interactions
        if need > 0 and count - self.state.last_count >= need:
            return "volume"
        return None

    def run_once(self, count: int) -> str:
        """One retrain in a child process; returns its outcome (never raises): one of
        OUTCOMES, or "stopped" when a shutdown ended it (not counted)."""
        assert self.state is not None
        t0 = time.time()
        self.metrics.running.set(1)
        outcome, out = "failed", ""
        try:
            self._child = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            out, err = self._child.communicate()
            outcome = EXIT_OUTCOME.get(self._child.returncode, "failed")
            if outcome == "failed":
                log.error(
                    "trainer: retrain failed (exit %s): %s",
                    self._child.returncode,
                    err.strip()[-2000:],
                )
        except OSError as err:
            log.error("trainer: cannot start the retrain: %s", err)
        finally:
            self._child = None
            self.metrics.running.set(0)
        if self.stop.is_set() and outcome == "failed":
            log.info("trainer: the running retrain was stopped by the shutdown")
            return "stopped"
        self._record(outcome, _last_json(out), t0, count)
        return outcome

    def _record(self, outcome: str, result: dict[str, Any], t0: float, count: int) -> None:
        end = time.time()
        self.metrics.runs.labels(outcome).inc()
        self.metrics.last_run.set(end)
        self.metrics.duration.set(end - t0)
        decision = result.get("decision") or {}
        for model in ("candidate", "current"):
            if decision.get(model) is not None:
                self.metrics.gate.labels(model).set(float(decision[model]))
        log.info("trainer: run %s in %.0f s (%s)", outcome, end - t0, decision.get("reason", ""))
        assert self.state is not None
        if outcome != "failed":  # a failed run is retried at the next check
            self.state.last_count = count
        self.state.last_run = end
        self.state.save(self.state_path)

    def loop(self) -> None:
        """Check every ``trainer_check_s`` until :meth:`shutdown`."""
        while not self.stop.is_set():
            now, count = time.time(), self._count()
            if count is not None:
                if self.state is None:
                    self.state = SchedulerState.load(self.state_path, count, now)
                reason = self.due(now, count)
                if reason is not None:
                    log.info("trainer: retrain due (%s)", reason)
                    self.run_once(count)
            self.stop.wait(self.s.trainer_check_s)

    def shutdown(self, *_: object) -> None:
        """SIGTERM/SIGINT: stop the loop; a running retrain is terminated (the registry
        stays consistent: a version is listed or current only once complete)."""
        self.stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            log.info("trainer: stopping the running retrain (pid %d)", child.pid)
            child.send_signal(signal.SIGTERM)


def _last_json(out: str) -> dict[str, Any]:
    """The outcome JSON ``micrec retrain`` prints (its stdout up to the report line)."""
    start = out.find("{")
    end = out.rfind("}")
    if start < 0 or end < start:
        return {}
    try:
        doc = json.loads(out[start : end + 1])
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
