"""The warm co-purchase benchmark's bundle copy (bench/serve_warm_boost.py): the manifest
edit, and that the service's loader and engine take the copy and run the stage with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model.bundle import load_bundle, read_manifest, verify_bundle
from model.inference import InferenceEngine
from tests.app.real_bundle import RealBundles

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # the bench modules' own imports are bare


def manifest(copurchase: bool = True) -> dict[str, Any]:
    return {
        "model_version": "micrec-1-abc",
        "data": {"k": 1},
        "blend": {
            "weights": {
                "a": {
                    "inductive": {"model": 1.0},
                    "cross_domain": {"model": 2.0, "copurchase": 3.0},
                },
                "b": {"inductive": {"model": 1.0}, "cross_domain": {"model": 2.0}},
                "c": {"cross_domain": {"model": 2.0, "copurchase": 5.0}},
            },
            "copurchase": {"top": 200} if copurchase else None,
        },
    }


def test_warm_manifest_takes_each_domains_cross_domain_weight_or_the_one_given() -> None:
    from serve_warm_boost import warm_manifest

    src = manifest()
    before = json.dumps(src)
    out, chosen = warm_manifest(src)
    assert json.dumps(src) == before  # the source is left as it was
    assert chosen == {"a": 3.0}  # b has no cross-domain weight, c no inductive type
    weights = out["blend"]["weights"]
    assert weights["a"]["inductive"] == {"model": 1.0, "copurchase": 3.0}
    assert "copurchase" not in weights["b"]["inductive"] and "inductive" not in weights["c"]
    assert out["model_version"] == "micrec-1-abc-warm"
    assert out["data"] == {
        "k": 1,
        "warm_boost": {"from_model_version": "micrec-1-abc", "weights": {"a": 3.0}},
    }
    out, chosen = warm_manifest(src, 0.5)
    assert chosen == {"a": 0.5, "b": 0.5}
    assert out["blend"]["weights"]["b"]["inductive"]["copurchase"] == 0.5
    with pytest.raises(ValueError, match="no co-purchase transitions"):
        warm_manifest(manifest(copurchase=False), 1.0)
    with pytest.raises(ValueError, match="give --weight"):
        warm_manifest(manifest(), 0.0)


def test_warm_copy_loads_and_boosts_users_with_history_in_the_domain(
    real: RealBundles, tmp_path: Path
) -> None:
    """The copy's files are the source's (linked: the loader's sha256 check passes, the
    manifest is its own file), and its engine gives a user with history in the domain and
    co-purchased items in another their boost, at the weight written."""
    from serve_warm_boost import write_warm_copy

    src = read_manifest(real.v1)
    if not (src.get("blend") or {}).get("copurchase"):
        pytest.skip("the tiny bundle fitted no co-purchase transitions")
    dst = tmp_path / "warm"
    chosen = write_warm_copy(real.v1, dst, 1.0)
    assert set(chosen) == set(src["domains"]) and set(chosen.values()) == {1.0}
    verify_bundle(dst)
    for name in src["sha256"]:
        assert (dst / name).stat().st_ino == (real.v1 / name).stat().st_ino
    assert read_manifest(real.v1) == src  # the source's manifest is untouched
    assert write_warm_copy(real.v1, dst, 1.0) == chosen  # kept as it is the second time

    bundle = load_bundle(dst)
    engine = InferenceEngine.from_bundle(bundle, cache_dir=tmp_path / "cache")
    boosted = 0
    for d in bundle.domains:
        for user in bundle.domains[d].user_ids[:50]:
            history = engine.bundle_history(user)
            if d not in history or len(history) < 2:
                continue
            e = engine.embed_user(d, history)
            assert e.method == "inductive"
            if e.boost is not None:
                boosted += 1
                assert len(e.boost.item_ids) == len(e.boost.scores) > 0
                assert float(e.boost.scores.max()) == pytest.approx(1.0, rel=1e-5)
    assert boosted > 0
