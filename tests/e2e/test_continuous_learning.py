"""Continuous learning end to end on the demo catalogue (slow: three trainings of the demo
model): a real ``micrec serve`` process serving from a bundle registry, traffic over HTTP
that creates a pattern the bundle does not know, ``micrec retrain`` promoting a candidate
that every request then uses, a shuffled candidate refused while the current keeps
serving, ``kill -9`` in the middle of a retrain, and a user erasure that reaches the store,
the export and the next bundle. Figures are printed as ``RETRAIN {json}`` lines
(docs/results/retrain.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.learning.retrain_run import RetrainOptions, retrain
from app.lifecycle.promotion import promote
from app.store.sqlite import SQLiteStore
from model.bundle import verify_bundle
from model.data.loading import load_dataset
from model.registry import BundleRegistry
from model.retrain import Gate, Window
from tests.app.learning.test_retrain import shuffled_split
from tests.reliability.procs import AUTH, REAL_APP, REPO, ServiceProcess, free_port, wait_for

pytestmark = pytest.mark.slow

DEMO_BUNDLE, DEMO_DATA = REPO / "artifacts/demo-bundle", REPO / "artifacts/demo-data"
GROUP, PER_USER = 10, 6


def record(name: str, **figures: Any) -> None:
    print("RETRAIN " + json.dumps({"test": name, **figures}, default=float))


def pattern(buyers: list[str], group: list[str], t0: float) -> list[dict[str, Any]]:
    """Each buyer gets PER_USER items of ``group``: every buyer's first half, then every
    buyer's second half (so later purchases follow from earlier ones)."""
    rng = np.random.default_rng(len(buyers))
    picks = {u: rng.choice(group, PER_USER, replace=False) for u in buyers}
    rows, half = [], PER_USER // 2
    for phase, part in enumerate((slice(0, half), slice(half, PER_USER))):
        for k, u in enumerate(buyers):
            for j, item in enumerate(picks[u][part]):
                ts = t0 + phase * 50_000 + k * 10 + j
                rows.append({"user_id": u, "item_id": str(item), "timestamp": ts})
    return rows


def post(client: httpx.Client, rows: list[dict[str, Any]]) -> None:
    for k in range(0, len(rows), 500):
        r = client.post("/v1/interactions", json={"interactions": rows[k : k + 500]})
        assert r.status_code == 200, r.text


def group_share(client: httpx.Client, users: list[str], group: set[str]) -> float:
    """Mean number of ``group`` items in a user's office top 20 (items already bought are
    never recommended, so these are the group items still to come)."""
    hits = []
    for u in users:
        r = client.post("/v1/recommend", json={"user_id": u, "domain": "office", "n": 20})
        assert r.status_code == 200, r.text
        hits.append(sum(it["item_id"] in group for it in r.json()["items"]))
    return float(np.mean(hits))


def serving(client: httpx.Client) -> str | None:
    return client.get("/v1/model").json().get("bundle_version")


def retrain_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "retrain", "--quiet", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def shop(tmp_path: Path) -> Any:
    if not (DEMO_BUNDLE / "manifest.json").is_file() or not (DEMO_DATA / "items.csv").is_file():
        pytest.skip("demo bundle/catalogue missing (make demo-bundle)")
    reg = BundleRegistry(tmp_path / "registry")
    db = tmp_path / "state.db"
    store = SQLiteStore(db)
    promote(reg, store, reg.add(DEMO_BUNDLE), reason="demo")
    env = {
        "MICREC_STORE_URL": f"sqlite:///{db}",
        "MICREC_REGISTRY_DIR": str(reg.root),
        "MICREC_RETRAIN_DIR": str(tmp_path / "runs"),
        "MICREC_REGISTRY_POLL_S": "0.2",
    }
    svc = ServiceProcess(env, app=REAL_APP, log_path=tmp_path / "serve.log")
    svc.start(timeout=300)
    child_env = {k: v for k, v in svc.env.items() if k != "MICREC_LOG_LEVEL"}
    with httpx.Client(base_url=svc.url, headers=AUTH, timeout=60) as client:
        yield {"reg": reg, "store": store, "client": client, "env": child_env, "svc": svc}
    svc.stop()


def test_retrain_learns_a_new_pattern_refuses_a_bad_candidate_survives_kill9(
    shop: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, store, client, env = shop["reg"], shop["store"], shop["client"], shop["env"]
    data = load_dataset(DEMO_DATA)
    inter = data.interactions
    cat = json.loads((DEMO_BUNDLE / "catalogue.json").read_text())["office"]
    pop = dict(zip(cat["item_ids"], cat["popularity"], strict=True))
    group = sorted(pop, key=lambda i: (pop[i], i))[:GROUP]  # the least popular office items
    in_office = Counter(inter.user[inter.domain == "office"].tolist())
    kitchen = sorted(set(inter.user[inter.domain == "kitchen"].tolist()))
    buyers = [u for u in kitchen if in_office[u] >= 3]  # kept by the training's k-core
    first, second = buyers[:300], buyers[300:450]
    assert len(second) == 150
    erased = first[5]

    # --- traffic with a pattern the bundle does not know; one user then erased ----------
    t0 = time.time() - 400_000
    post(client, pattern(first, group, t0))
    probe = first[-60:]  # their second halves fall in the evaluation window
    before = group_share(client, probe, set(group))
    assert client.delete(f"/v1/users/{erased}").status_code == 204
    assert store.get_history(erased) == {}

    # --- retrain: promoted, every request then uses it ---------------------------------
    seen: list[float] = []
    stop = threading.Event()

    def watch() -> None:  # when does the served process first answer with the new version?
        with httpx.Client(base_url=shop["svc"].url, headers=AUTH, timeout=10) as c:
            while not stop.is_set() and not seen:
                if serving(c) == "v0002":
                    seen.append(time.time())
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t = time.time()
    proc = retrain_cli(env)
    try:
        out, err = proc.communicate(timeout=1800)
    finally:
        if proc.returncode == 0:  # the replica follows within a few polls
            wait_for(lambda: bool(seen), 120)
        stop.set()
        watcher.join()
    assert proc.returncode == 0, err[-3000:]
    wall = time.time() - t
    good = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert good["outcome"] == "promoted" and reg.current() == good["version"] == "v0002"
    announced = shop["store"].get_bundle_version()
    assert announced is not None and seen and serving(client) == "v0002"
    after = group_share(client, probe, set(group))
    record(
        "promote",
        seconds=good["seconds"],
        wall_s=round(wall, 1),
        gate=good["decision"],
        group_in_top20_before=before,
        group_in_top20_after=after,
        promotion_to_serving_s=round(seen[0] - announced.announced_at, 3),
    )
    assert after > before + 0.5, (before, after)
    run = Path(good["run_dir"])
    exported = (run / "export" / "interactions.csv").read_text()
    assert f"\n{erased}," not in exported
    catalogue = json.loads((reg.path("v0002") / "catalogue.json").read_text())
    assert all(erased not in c["user_ids"] for c in catalogue.values())

    # --- a shuffled candidate is refused; the current keeps serving ---------------------
    post(client, pattern(second, group, t0 + 200_000))
    import app.learning.retrain_run as retrain_module

    monkeypatch.setattr(
        retrain_module, "split_by_time", shuffled_split(retrain_module.split_by_time)
    )
    bad = retrain(
        store, reg, tmp_path / "runs", RetrainOptions(window=Window(), gate=Gate(), progress=False)
    )
    assert bad is not None and bad.outcome == "refused", bad
    record("refuse", seconds=bad.seconds, gate=bad.decision)
    assert reg.current() == "v0002" and reg.show(bad.version or "").status == "refused"
    time.sleep(1.0)  # several registry polls
    assert serving(client) == "v0002"
    assert client.get("/readyz").status_code == 200

    # --- kill -9 during a retrain: the registry stays consistent ------------------------
    monkeypatch.undo()
    proc = retrain_cli(env)
    runs = tmp_path / "runs"
    assert wait_for(
        lambda: any(
            (r / "train" / "export.json").is_file()
            for r in runs.iterdir()
            if r.name not in {Path(good["run_dir"]).name, bad.run_dir.name}
        ),
        600,
        0.1,
    )
    time.sleep(2.0)  # into the training
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    versions = [v.version for v in reg.list()]
    assert versions == ["v0001", "v0002", "v0003"], versions  # no half-written version
    for v in versions:
        verify_bundle(reg.path(v))
    assert reg.current() == "v0002" and serving(client) == "v0002"
    v4 = reg.add(reg.path("v0002"))  # the registry still takes new versions
    assert v4 == "v0004"
    assert not list(reg.root.glob(".incoming-*"))  # a dead writer's leftovers are gone


def test_trainer_retrains_after_new_traffic_and_the_service_follows(
    shop: Any, tmp_path: Path
) -> None:
    """``micrec serve`` + ``micrec trainer`` and nothing else: traffic arrives, the trainer
    notices the count, retrains, the gate promotes, the served process follows."""
    reg, client, env = shop["reg"], shop["client"], shop["env"]
    data = load_dataset(DEMO_DATA)
    inter = data.interactions
    cat = json.loads((DEMO_BUNDLE / "catalogue.json").read_text())["office"]
    pop = dict(zip(cat["item_ids"], cat["popularity"], strict=True))
    group = sorted(pop, key=lambda i: (pop[i], i))[:GROUP]
    in_office = Counter(inter.user[inter.domain == "office"].tolist())
    kitchen = sorted(set(inter.user[inter.domain == "kitchen"].tolist()))
    buyers = [u for u in kitchen if in_office[u] >= 3][:300]
    port = free_port()
    trainer_env = {
        **env,
        "MICREC_TRAINER_MIN_NEW_INTERACTIONS": "1000",
        "MICREC_TRAINER_CHECK_S": "0.5",
        "MICREC_TRAINER_METRICS_PORT": str(port),
    }
    trainer = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "trainer"],
        env=trainer_env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "trainer.log", "w"),  # noqa: SIM115 - closed with the process
    )

    def runs(outcome: str) -> float:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        line = f'micrec_trainer_runs_total{{outcome="{outcome}"}} '
        return float(next(x for x in body.splitlines() if x.startswith(line)).split()[-1])

    try:
        assert wait_for(lambda: runs("promoted") == 0, 120)  # up, nothing due yet
        post(client, pattern(buyers, group, time.time() - 400_000))  # 1800 new rows
        t = time.time()
        assert wait_for(lambda: runs("promoted") == 1, 900, 0.5), (
            tmp_path / "trainer.log"
        ).read_text()[-3000:]
        assert reg.current() == "v0002"
        assert wait_for(lambda: serving(client) == "v0002", 60)
        record("trainer", seconds_to_promoted=round(time.time() - t, 1))
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(30) == 0
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
