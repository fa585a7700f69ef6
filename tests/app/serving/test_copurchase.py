"""The co-purchase re-ranking stage (app/serving/copurchase.py): the index's top n plus the
boosted items gives the exact top n of inner product + boost, with exclusions, filters
and removed items; and through the real app (HTTP, the live path and the top-N cache),
users new to a domain and users with history in it get the offline evaluation's top 20
with the boost (and the other-domain content profile) included."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.index.domain import DomainIndex
from app.serving.copurchase import rerank
from model.blendfit import fit_blend
from model.bundle import load_bundle
from model.evaluation import _masked_topk, slice_inputs
from model.nn.blend import BlendWeights
from model.nn.config import BlendConfig
from model.rankers import MICRecRanker
from model.serving_types import ItemBoost
from tests.app.real_bundle import AUTH, real_settings, running_real
from tests.model.tiny_trained import train_tiny, write_tiny_bundle

D = 16


def _brute(
    x: np.ndarray, ids: list[str], q: np.ndarray, boost: ItemBoost, n: int, ok: set[str]
) -> list[str]:
    s = x @ q
    added = dict(zip(boost.item_ids, boost.scores.tolist(), strict=True))
    scored = [(iid, float(s[k]) + added.get(iid, 0.0)) for k, iid in enumerate(ids) if iid in ok]
    return [iid for iid, _ in sorted(scored, key=lambda t: -t[1])[:n]]


@pytest.mark.parametrize("seed", range(5))
def test_rerank_is_the_exact_top_n_of_score_plus_boost(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"i{k}" for k in range(300)]
    x = rng.standard_normal((300, D)).astype(np.float32)
    index = DomainIndex("books", D)
    index.build(ids, x)
    index.remove(["i3"])  # a boosted item deleted after the bundle: never served
    q = rng.standard_normal(D).astype(np.float32)
    picked = rng.choice(300, 40, replace=False)
    boost = ItemBoost([ids[k] for k in picked], rng.uniform(0.1, 3.0, 40).astype(np.float32))
    boost = ItemBoost(["i3", *boost.item_ids], np.r_[np.float32(50.0), boost.scores])
    excluded = {ids[k] for k in rng.choice(300, 30, replace=False)}
    odd = {f"i{k}" for k in range(1, 300, 2)}  # a filter: odd ids only
    for keep_set in (set(ids) - excluded - {"i3"}, odd - excluded - {"i3"}):
        hits = [
            (i, s)
            for i, s in index.search(q.reshape(1, -1), 300, exclude=[excluded])[0]
            if i in keep_set
        ][:20]
        got = rerank(index, q, hits, boost, 20, lambda i, ks=keep_set: i in ks)  # type: ignore[misc]
        assert [i for i, _ in got] == _brute(x, ids, q, boost, 20, keep_set)
        # the boost moved something: the check compares more than the index's own answer
        assert [i for i, _ in got] != [i for i, _ in hits]


# --- through the real app ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def boosted_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A tiny trained bundle with the co-purchase boost fitted and its weights (users new to
    a domain, users with history in it) set to a value that reorders lists (whatever the
    fit chose on so little data), and users' other-domain content profile mixed into
    theirs (``profile_other``, with a content weight for it to count)."""
    root = tmp_path_factory.mktemp("cp-app")
    cfg, ds, split, feats, model = train_tiny(root, users=400, epochs=6)
    blend, _ = fit_blend(model, split, feats, BlendConfig(trials=3, content_dim=8, copurchase=True))
    for d in blend.weights:
        for user_type in ("cross_domain", "inductive"):
            w = blend.weights[d].get(user_type, BlendWeights())
            blend.weights[d][user_type] = replace(w, copurchase=0.5, content=w.content or 2.0)
    blend.profile_other = dict.fromkeys(blend.weights, 0.5)
    out = write_tiny_bundle(root / "bundle", cfg, ds, split, feats, model, blend=blend)
    yield {"root": root, "bundle": out, "split": split, "features": feats}


def _evaluation_top(
    b: dict[str, Any], domain: str, users: np.ndarray, k: int, *, cross_domain: bool = True
) -> list[list[str]]:
    """The offline evaluation's top ``k`` (train and val of ``domain`` masked)."""
    bundle = load_bundle(b["bundle"])
    split = b["split"]
    ranker = MICRecRanker(
        "micrec", bundle.model, split, b["features"], blend=bundle.blend, bridges=bundle.bridges
    )
    scores = ranker.bind(slice_inputs(split, domain, "standard")).scores(
        domain, users, cross_domain=cross_domain
    )
    assert scores is not None
    ds = split.domains[domain]
    top = _masked_topk(scores.float(), users, ds, np.ones(ds.n_items, dtype=bool), k)
    return [[ds.item_ids[i] for i in row if i >= 0] for row in top]


def test_http_top_20_of_users_new_to_a_domain_equals_evaluation(
    boosted_bundle: dict[str, Any], tmp_path: Path
) -> None:
    """Inline other-domain history (the live path) and a known user's id (the top-N cache
    path): both answer the evaluation's top 20, boost included; the boost changes the
    lists of most of these users, so the check cannot pass without the stage."""
    b = boosted_bundle
    split = b["split"]
    settings = real_settings(b["bundle"], tmp_path, max_n=100)
    changed = checked = 0
    with running_real(settings) as client:
        for domain in sorted(split.domains):
            ds = split.domains[domain]
            users = split.cross_domain_cold_users(domain)[:8]
            want = _evaluation_top(b, domain, users, 20)
            for u, expected in zip(users, want, strict=True):
                raw = ds.user_ids[u]
                history = [
                    split.domains[d].item_ids[i]
                    for d in sorted(split.domains)
                    if d != domain and raw in (other := split.domains[d]).user_ids
                    for i in other.train[other.train[:, 0] == other.user_ids.index(raw), 1]
                ]
                masked = [ds.item_ids[i] for p in (ds.train, ds.val) for i in p[p[:, 0] == u, 1]]
                live = _post(client, {"history": history, "exclude": masked}, domain)
                assert live["user_embedding"] == "cross_domain"
                # the same history stored for a new user id: the top-N cache path
                user = f"cp-{domain}-{raw}"
                rows = [
                    {"user_id": user, "item_id": i, "domain": engine_domain(client, i)}
                    for i in history
                ]
                r = client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
                assert r.status_code == 200, r.text
                cached = _post(client, {"user_id": user, "exclude": masked}, domain)
                assert cached["user_embedding"] == "cross_domain"
                again = _post(client, {"user_id": user, "exclude": masked}, domain)
                assert again["cached"] is True and again["items"] == cached["items"]
                assert [it["item_id"] for it in live["items"]] == expected
                assert [it["item_id"] for it in cached["items"]] == expected
                engine = client.app.state.service.served.state.engine  # type: ignore[attr-defined]
                plain = (
                    engine.catalogue(domain).vectors
                    @ engine.embed_user(domain, {"any": history}).vector
                )
                plain[[ds.item_ids.index(i) for i in masked + history if i in ds.item_ids]] = -1e9
                changed += int([ds.item_ids[k] for k in np.argsort(-plain)[:20]] != expected)
                checked += 1
    assert checked >= 10 and changed >= checked // 2, (changed, checked)


def test_http_top_20_of_users_with_history_in_the_domain_equals_evaluation(
    boosted_bundle: dict[str, Any], tmp_path: Path
) -> None:
    """Users with history in the domain and in another one, their boost from the other
    domain's items: inline history (the live path) answers the evaluation's top 20, and
    the boost changes most of these lists."""
    b = boosted_bundle
    split = b["split"]
    settings = real_settings(b["bundle"], tmp_path, max_n=100)
    changed = checked = 0
    with running_real(settings) as client:
        engine = client.app.state.service.served.state.engine  # type: ignore[attr-defined]
        for domain in sorted(split.domains):
            ds = split.domains[domain]
            users = split.pseudo_cold_users(domain)[:8]  # old users of both domains
            want = _evaluation_top(b, domain, users, 20, cross_domain=False)
            for u, expected in zip(users, want, strict=True):
                raw = ds.user_ids[u]
                own = [ds.item_ids[i] for i in ds.train[ds.train[:, 0] == u, 1]]
                other = [
                    split.domains[d].item_ids[i]
                    for d in sorted(split.domains)
                    if d != domain and raw in (o := split.domains[d]).user_ids
                    for i in o.train[o.train[:, 0] == o.user_ids.index(raw), 1]
                ]
                assert own and other
                seen_val = [ds.item_ids[i] for i in ds.val[ds.val[:, 0] == u, 1]]
                live = _post(client, {"history": own + other, "exclude": seen_val}, domain)
                assert live["user_embedding"] == "inductive"
                assert [it["item_id"] for it in live["items"]] == expected
                plain = (
                    engine.catalogue(domain).vectors
                    @ engine.embed_user(domain, {"any": own + other}).vector
                )
                plain[[ds.item_ids.index(i) for i in own + seen_val]] = -1e9
                changed += int([ds.item_ids[k] for k in np.argsort(-plain)[:20]] != expected)
                checked += 1
    assert checked >= 10 and changed >= checked // 2, (changed, checked)


def engine_domain(client: TestClient, item_id: str) -> str:
    domain: str | None = client.app.state.service.served.state.item_domain(item_id)  # type: ignore[attr-defined]
    assert domain is not None
    return domain


def _post(client: TestClient, body: dict[str, Any], domain: str) -> dict[str, Any]:
    r = client.post("/v1/recommend", json={"domain": domain, "n": 20, **body}, headers=AUTH)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out
