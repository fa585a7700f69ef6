"""A domain with fewer items than K trains, validates, evaluates and serves (issue 12/14).

The public reproduction: two domains of 300 and 12 items (tests/model/small_domain.py),
``micrec train DATA`` with text features, then ``micrec evaluate`` (K = 10, 20, 50) and the
production app answering n = 20 in the 12-item domain. Real MiniLM text features (encoded
once, ~300 short titles), a few epochs: the point is the shapes, not the quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from model.data.loading import load_dataset
from model.data.split import SplitConfig, build_split
from tests.app.real_bundle import AUTH, real_settings, running_real
from tests.model.small_domain import DOMAINS, write_small_domain_dataset

N = 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("small-domain")
    data = write_small_domain_dataset(root / "data")
    config = root / "run.toml"
    config.write_text(
        f'[features]\nimage = "none"\ncache_dir = "{root / "cache"}"\n'
        '[model]\nmodalities = ["text"]\n[train]\nepochs = 3\n'
    )
    out = str(root / "bundle")
    assert main(["--threads", "1", "train", str(data), "--config", str(config), "--out", out]) == 0
    return data, root / "bundle"


def test_small_domain_is_validated_every_epoch(trained: tuple[Path, Path]) -> None:
    _, bundle = trained
    history = json.loads((bundle / "history.json").read_text())
    assert len(history) == 3
    for row in history:
        assert 0 <= row["val_ndcg@20/small"] <= 1
        assert 0 <= row["val_ndcg@20/big"] <= 1


def test_small_domain_evaluates_at_every_k(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, bundle = trained
    assert main(["--threads", "1", "evaluate", str(bundle), "--baselines", "--quiet"]) == 0
    results = json.loads((bundle / "evaluation" / "results.json").read_text())
    for method in ("micrec", "popular", "content-knn"):
        row = results[method]["small"]["all"]
        assert row["n_users"] > 0
        for k in (10, 20, 50):
            assert 0 < row[f"ndcg@{k}"] <= 1, (method, k, row)
        # 12 items, at most 8 per user: every held-out item is within the top 50 (all of
        # the user's unseen items), so recall@50 is exactly 1
        assert row["recall@50"] == pytest.approx(1.0)
        # 200 users' lists of up to 12 items: every item is listed for someone
        assert row["coverage@20"] == pytest.approx(1.0)
        assert 0 < row["long_tail@20"] < 1
    assert (
        "**small: catalogue coverage (%, slice all)**"
        in (bundle / "evaluation" / "results.md").read_text()
    )


def test_small_domain_serves_n_larger_than_the_catalogue(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, bundle = trained
    n_small = DOMAINS["small"][0]
    ds = build_split(load_dataset(data), SplitConfig()).domains["small"]
    assert ds.n_items == n_small
    user = ds.user_ids[0]
    seen = {ds.item_ids[i] for i in ds.train[ds.train[:, 0] == 0, 1]}
    assert 0 < len(seen) < n_small
    with running_real(real_settings(bundle, tmp_path)) as client:

        def recommend(**body: object) -> list[str]:
            r = client.post("/v1/recommend", json={"domain": "small", "n": N, **body}, headers=AUTH)
            assert r.status_code == 200, r.text
            ids = [hit["item_id"] for hit in r.json()["items"]]
            assert len(ids) == len(set(ids))
            return ids

        # a known user: every unseen item of the domain, nothing seen
        assert set(recommend(user_id=user)) == set(ds.item_ids) - seen
        assert set(recommend(user_id=user, exclude_seen=False)) == set(ds.item_ids)
        # no history: the popularity fallback, the whole catalogue
        assert set(recommend(user_id="nobody")) == set(ds.item_ids)
        r = client.get(f"/v1/items/{ds.item_ids[0]}/similar", params={"n": N}, headers=AUTH)
        assert r.status_code == 200, r.text
        similar = {hit["item_id"] for hit in r.json()["items"]}
        assert similar == set(ds.item_ids) - {ds.item_ids[0]}
        # the big domain still answers a full page
        r = client.post(
            "/v1/recommend", json={"domain": "big", "n": N, "user_id": user}, headers=AUTH
        )
        assert r.status_code == 200 and len(r.json()["items"]) == N
