"""The retrain gate tells models apart (issue 26, deliverable 0), at small scale: new
shoppers who each buy from one set of 10 office items the current bundle rates lowest
(two such sets, one per half of the shoppers: with a single set the items' popularity in
the window's input, which both bundles' prior reads, already ranks them first, and only
knowing which items go together can be better than that).

Before, users who appear only in the window were scored with no history (the prior alone,
the same for both bundles): candidate and current tied, and a tie promoted anything. Now
they are scored from their own earlier rows, the rule is paired over users with a
bootstrap interval, and a tie keeps the current version. Each scenario runs ``retrain``
end to end (export, window, a candidate trained for a few epochs, both scored, registry)."""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.learning.retrain_run import RetrainOptions, retrain
from app.lifecycle.promotion import promote
from app.store.base import Interaction
from app.store.sqlite import SQLiteStore
from model.data.synth import SynthConfig, write_synthetic_catalogue
from model.pipeline import train_run
from model.registry import BundleRegistry
from model.retrain import Gate, Window
from model.runconfig import load_run_config
from tests.app.learning.test_retrain import shuffled_split

GROUP, PER_USER, EPOCHS = 10, 6, 20


def _cfg(root: Path) -> Any:
    """Text-free tiny model with the score blend fitted, as a served bundle has (a user
    without history is then ranked by the prior alone: the issue's tie)."""
    return load_run_config(
        None,
        {
            "features": {"text": "none", "image": "none", "cache_dir": str(root / "cache")},
            "model": {"modalities": []},
            "train": {"epochs": EPOCHS, "patience": 100, "batch_size": 512, "lr": 0.005},
            "blend": {"enabled": True, "trials": 3, "content_dim": 0, "max_users": 200},
            "bridge": {"enabled": False},
            "item_map": {"enabled": False},
            "tune": {"trials": 0},
        },
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gate")
    data = root / "data"
    write_synthetic_catalogue(data, SynthConfig.tiny(images=False, users=300))
    with open(data / "interactions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    office = Counter(r["item_id"] for r in rows if r["domain"] == "office")
    least = sorted(office, key=lambda i: (office[i], i))  # least bought: unknown to v1
    groups = [least[:GROUP], least[GROUP : 2 * GROUP]]
    v1 = train_run(data, _cfg(root), root / "v1", progress=False, run_test=False)
    return {
        "v1": v1.bundle_dir,
        "groups": groups,
        "t0": max(int(r["timestamp"]) for r in rows) + 1000,
        "office_users": sorted({r["user_id"] for r in rows if r["domain"] == "office"}),
    }


def _serving_v1(shop: dict[str, Any], tmp: Path) -> tuple[SQLiteStore, BundleRegistry]:
    store = SQLiteStore(tmp / "state.db")
    reg = BundleRegistry(tmp / "registry")
    promote(reg, store, reg.add(shop["v1"]), reason="test")
    return store, reg


def _buys(
    users: list[str], groups: list[list[str]], t0: int, parts: list[slice]
) -> list[Interaction]:
    """User k buys items of group k % 2 (a seeded order of the group per user): for each
    part in turn, every user's items of that part, user after user (one part: every row of
    a shopper before the next one's; several: returning users, later rows follow earlier
    ones)."""
    rng = np.random.default_rng(len(users))
    picks = {u: rng.permutation(groups[k % len(groups)]) for k, u in enumerate(users)}
    out = []
    for p, part in enumerate(parts):
        for k, u in enumerate(users):
            for j, item in enumerate(picks[u][part]):
                ts = t0 + p * 100_000 + k * 10 + j
                out.append(Interaction(u, str(item), "office", float(ts)))
    return out


def _no_training(shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate is a copy of v1 (what a candidate that learned nothing new looks like
    to the gate), without training."""
    import model.pipeline as pipeline

    class Trained:
        def __init__(self, path: Path) -> None:
            self.bundle_dir = path

    def same_as_current(train_dir: Path, cfg: Any, out: Path, **_: Any) -> Trained:
        shutil.copytree(shop["v1"], out)
        return Trained(out)

    monkeypatch.setattr(pipeline, "train_run", same_as_current)


def _run(store: SQLiteStore, reg: BundleRegistry, runs: Path, window: float) -> Any:
    opts = RetrainOptions(window=Window(window), epochs=EPOCHS, progress=False)
    out = retrain(store, reg, runs, opts)
    assert out is not None
    return out


def _scored(reg: BundleRegistry, version: str) -> dict[str, int]:
    report = json.loads((reg.path(version) / "retrain-report.json").read_text())
    return dict(report["window"]["scored"]["office"])


@pytest.mark.parametrize("who", ["new", "returning"])
def test_the_gate_promotes_the_pattern_and_refuses_a_shuffled_candidate(
    shop: dict[str, Any], who: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First the pattern candidate against v1 (promoted: v0002), then, after more of the
    same traffic, a candidate trained on random items against v0002 (refused)."""
    store, reg = _serving_v1(shop, tmp_path)
    groups, t0 = shop["groups"], shop["t0"]
    if who == "new":  # shoppers nobody saw before; each window holds only such shoppers
        first = [f"shopper-{k:03d}" for k in range(240)]
        more = [f"shopper-{k:03d}" for k in range(240, 504)]
        rows = _buys(first, groups, t0, [slice(0, PER_USER)])
        later = _buys(more, groups, t0 + 10**6, [slice(0, PER_USER)])
        window = 0.15  # the last 36 shoppers of 240, then the last 45 of 300
    else:  # office customers of v1 come back: 3 items, 3 more, later 2 more
        users = shop["office_users"][:150]
        rows = _buys(users, groups, t0, [slice(0, 3), slice(3, 6)])
        later = _buys(users, groups, t0 + 10**6, [slice(6, 8)])
        window = 0.25  # the last 75 users' second halves, then about 65 users' last 2
    store.add_interactions(rows, history_cap=200)
    good = _run(store, reg, tmp_path / "runs", window)
    assert good.outcome == "promoted", good.decision
    assert reg.current() == good.version == "v0002"
    d = good.decision
    assert d["mean_difference"] > 0 and d["interval"][0] > 0  # better, with confidence
    scored = _scored(reg, good.version)
    if who == "new":  # every window user is scored from their own first 3 items
        assert scored["new_users"] == 36 and scored["new_inputs"] == scored["new_targets"] == 108
        assert scored["old_users"] == 0 and d["users"] == 36
    else:  # every window user is a returning customer with pre-window history
        assert scored["new_users"] == 0 and scored["old_users"] == 75 == d["users"]
    assert scored["left_out_users"] == 0
    md = (reg.path(good.version) / "retrain-report.md").read_text()
    assert f"decided by {d['users']} users" in md

    store.add_interactions(later, history_cap=200)
    import app.learning.retrain_run as retrain_module

    split = retrain_module.split_by_time
    monkeypatch.setattr(retrain_module, "split_by_time", shuffled_split(split))
    bad = _run(store, reg, tmp_path / "runs", window)
    assert bad.outcome == "refused", bad.decision
    assert bad.decision["users"] >= 30 and bad.decision["mean_difference"] < 0
    assert reg.current() == "v0002"
    bad_scored = _scored(reg, bad.version)
    assert (bad_scored["old_users"] == 0) if who == "new" else (bad_scored["new_users"] == 0)


def test_a_candidate_that_ties_keeps_the_current_version(
    shop: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate identical to the current bundle (what a candidate that learned nothing
    new looks like to the gate): every user's difference is 0, and the old rule's ">= current"
    promoted it."""
    store, reg = _serving_v1(shop, tmp_path)
    users = [f"shopper-{k:03d}" for k in range(240)]
    store.add_interactions(_buys(users, shop["groups"], shop["t0"], [slice(0, PER_USER)]), 200)
    _no_training(shop, monkeypatch)
    out = _run(store, reg, tmp_path / "runs", 0.15)
    assert out.outcome == "refused", out.decision
    assert out.decision["mean_difference"] == 0.0 and "a tie" in out.decision["reason"]
    assert out.decision["candidate"] == out.decision["current"]
    assert reg.current() == "v0001" and store.get_bundle_version().version == "v0001"  # type: ignore[union-attr]


def test_too_few_users_is_refused_and_says_how_many(
    shop: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, reg = _serving_v1(shop, tmp_path)
    _no_training(shop, monkeypatch)  # a count decides, whatever the candidate
    users = [f"shopper-{k:03d}" for k in range(60)]
    rows = _buys(users, shop["groups"], shop["t0"], [slice(0, PER_USER)])
    # three shoppers with a single item each in the window: too few to split, left out
    late = shop["t0"] + 10**6
    rows += [Interaction(f"once-{k}", shop["groups"][0][k], "office", late + k) for k in range(3)]
    store.add_interactions(rows, history_cap=200)
    out = _run(store, reg, tmp_path / "runs", 0.25)
    assert out.outcome == "refused"
    assert out.decision["users"] < 30 and "too few to decide" in out.decision["reason"]
    scored = _scored(reg, out.version)
    assert scored["left_out_users"] == 3 and scored["left_out_rows"] == 3


def test_with_a_canary_share_a_passing_candidate_starts_as_a_canary(
    shop: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MICREC_TRAINER_CANARY_SHARE: the gate's pass announces a canary; nothing switches."""
    store, reg = _serving_v1(shop, tmp_path)
    users = [f"shopper-{k:03d}" for k in range(240)]
    store.add_interactions(_buys(users, shop["groups"], shop["t0"], [slice(0, PER_USER)]), 200)
    _no_training(shop, monkeypatch)
    lenient = Gate(tolerance=1.0, margin=-1.0)  # passes anything: the canary decides
    opts = RetrainOptions(window=Window(0.15), gate=lenient, progress=False, canary_share=0.1)
    out = retrain(store, reg, tmp_path / "runs", opts)
    assert out is not None and out.outcome == "canary" and out.announced, out
    canary = store.get_canary()
    assert canary is not None and (canary.version, canary.share) == (out.version, 0.1)
    assert reg.current() == "v0001" and store.get_bundle_version().version == "v0001"  # type: ignore[union-attr]


DEMO_BUNDLE = Path(__file__).resolve().parents[3] / "artifacts" / "demo-bundle"


@pytest.mark.slow
def test_the_issue_scenario_on_the_demo_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's reproduction at its own scale: the demo bundle serving, 4000 rows of 400
    new shoppers who all buy the same 10 office items (the least popular ones), the
    default gate. Before: 51.63 % vs 51.63 %, a tie, promoted whatever the candidate."""
    if not (DEMO_BUNDLE / "manifest.json").is_file():
        pytest.skip("demo bundle missing (make demo-bundle)")
    store = SQLiteStore(tmp_path / "state.db")
    reg = BundleRegistry(tmp_path / "registry")
    promote(reg, store, reg.add(DEMO_BUNDLE), reason="test")
    cat = json.loads((DEMO_BUNDLE / "catalogue.json").read_text())["office"]
    pop = dict(zip(cat["item_ids"], cat["popularity"], strict=True))
    group = sorted(pop, key=lambda i: (pop[i], i))[:10]
    t0 = int(time.time()) - 500_000
    rng = np.random.default_rng(0)

    def shoppers(first: int, n: int, start: int) -> list[Interaction]:
        return [
            Interaction(f"new-shopper-{k}", str(item), "office", float(start + 20 * k + j))
            for k in range(first, first + n)
            for j, item in enumerate(rng.permutation(group))
        ]

    store.add_interactions(shoppers(0, 400, t0), history_cap=200)
    opts = RetrainOptions(progress=False)  # the default window (10 %) and gate
    good = retrain(store, reg, tmp_path / "runs", opts)
    assert good is not None and good.outcome == "promoted", good.decision
    scored = json.loads((reg.path("v0002") / "retrain-report.json").read_text())
    assert scored["window"]["scored"]["office"]["new_users"] == 40
    assert good.decision["users"] == 40 and good.decision["interval"][0] > 0
    print("ISSUE-SCENARIO promoted", json.dumps(good.decision))

    store.add_interactions(shoppers(400, 300, t0 + 100_000), history_cap=200)  # window: 34
    import app.learning.retrain_run as retrain_module

    split = retrain_module.split_by_time
    monkeypatch.setattr(retrain_module, "split_by_time", shuffled_split(split))
    bad = retrain(store, reg, tmp_path / "runs", opts)
    assert bad is not None and bad.outcome == "refused", bad.decision
    assert bad.decision["users"] >= 30 and bad.decision["mean_difference"] < 0
    assert reg.current() == "v0002"
    print("ISSUE-SCENARIO refused", json.dumps(bad.decision))
