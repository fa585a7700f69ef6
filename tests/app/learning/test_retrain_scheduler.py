"""``micrec trainer`` (app/learning/retrain_scheduler.py): when a retrain is due, outcomes from the child's exit
status, failures counted and survived, state kept across restarts, metrics, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from app.learning.retrain_scheduler import RetrainScheduler, SchedulerState
from app.settings import Settings
from app.store.base import Interaction
from app.store.sqlite import SQLiteStore

GATE = {"candidate": 0.31, "current": 0.30, "reason": "candidate 0.31 >= current 0.30 - 0"}


def _child(code: int, *, sleep: float = 0.0) -> list[str]:
    """A stand-in for ``micrec retrain``: prints an outcome JSON, exits with ``code``."""
    doc = json.dumps({"outcome": "x", "decision": GATE})
    src = f"import time, sys; time.sleep({sleep}); print({doc!r}); sys.exit({code})"
    return [sys.executable, "-c", src]


def _settings(tmp_path: Path, **kw: object) -> Settings:
    values: dict[str, object] = {
        "retrain_dir": tmp_path / "runs",
        "store_url": f"sqlite:///{tmp_path / 'state.db'}",
        "trainer_check_s": 0.05,
    }
    values.update(kw)
    return Settings(**values)  # type: ignore[arg-type]


def _add(store: SQLiteStore, n: int) -> None:
    rows = [Interaction(f"u{k}", f"i{k}", "food", time.time()) for k in range(n)]
    store.add_interactions(rows, history_cap=10)


def test_off_by_default(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the trainer is off"):
        RetrainScheduler(_settings(tmp_path), SQLiteStore(tmp_path / "state.db"))


def test_volume_trigger_outcomes_and_metrics(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    s = _settings(tmp_path, trainer_min_new_interactions=5)
    t = RetrainScheduler(s, store, command=_child(0))
    t.state = SchedulerState.load(t.state_path, store.interaction_count(), time.time())
    assert t.due(time.time(), store.interaction_count()) is None
    _add(store, 4)
    assert t.due(time.time(), store.interaction_count()) is None
    _add(store, 1)
    count = store.interaction_count()
    assert t.due(time.time(), count) == "volume"
    assert t.run_once(count) == "promoted"
    assert t.due(time.time(), count) is None  # counted from this run on
    m = t.metrics.registry
    assert m.get_sample_value("micrec_trainer_runs_total", {"outcome": "promoted"}) == 1
    assert m.get_sample_value("micrec_trainer_gate_metric", {"model": "candidate"}) == 0.31
    assert m.get_sample_value("micrec_trainer_gate_metric", {"model": "current"}) == 0.30
    assert m.get_sample_value("micrec_trainer_last_run_timestamp_seconds") > 0  # type: ignore[operator]

    t.command = _child(1)  # a crashing retrain: counted, logged, not fatal, retried later
    _add(store, 5)
    assert t.run_once(store.interaction_count()) == "failed"
    assert m.get_sample_value("micrec_trainer_runs_total", {"outcome": "failed"}) == 1
    assert t.due(time.time(), store.interaction_count()) == "volume"
    t.command = _child(3)
    assert t.run_once(store.interaction_count()) == "refused"

    again = RetrainScheduler(s, store, command=_child(0))  # a restart reads the state back
    again.state = SchedulerState.load(again.state_path, 0, time.time())
    assert again.state.last_count == store.interaction_count()


def test_schedule_trigger_runs_in_the_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    t = RetrainScheduler(_settings(tmp_path, trainer_interval_s=0.2), store, command=_child(4))
    th = threading.Thread(target=t.loop)
    th.start()
    deadline = time.time() + 20
    reg = t.metrics.registry
    while (reg.get_sample_value("micrec_trainer_runs_total", {"outcome": "skipped"}) or 0) < 2:
        assert time.time() < deadline, "no scheduled run"
        time.sleep(0.05)
    t.shutdown()
    th.join(5)
    assert not th.is_alive()


def test_shutdown_stops_a_running_retrain(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    t = RetrainScheduler(
        _settings(tmp_path, trainer_interval_s=0.01), store, command=_child(0, sleep=60)
    )
    th = threading.Thread(target=t.loop)
    th.start()
    deadline = time.time() + 20
    while t._child is None:
        assert time.time() < deadline
        time.sleep(0.02)
    t.shutdown()
    th.join(10)  # a bounded wait: shutdown must end the loop, not hang it
    assert not th.is_alive()
    assert (
        t.metrics.registry.get_sample_value("micrec_trainer_runs_total", {"outcome": "failed"}) == 0
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serves_metrics_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICREC_")}
    env.update(
        {
            "MICREC_STORE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "MICREC_REGISTRY_DIR": str(tmp_path / "registry"),
            "MICREC_RETRAIN_DIR": str(tmp_path / "runs"),
            "MICREC_TRAINER_MIN_NEW_INTERACTIONS": "1000000",
            "MICREC_TRAINER_METRICS_PORT": str(port),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "trainer"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline, body = time.time() + 60, ""
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.2)
        assert 'micrec_trainer_runs_total{outcome="failed"} 0.0' in body
        assert "micrec_trainer_new_interactions 0.0" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_says_the_trainer_is_off(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICREC_")}
    env["MICREC_REGISTRY_DIR"] = str(tmp_path / "registry")
    env["MICREC_STORE_URL"] = f"sqlite:///{tmp_path / 'state.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "trainer"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "the trainer is off" in proc.stderr
