"""The served score blend (model.nn.blend) and its fit on validation (model.blendfit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.blendfit import CORNERS, fit_blend
from model.bundle import BundleError, load_bundle
from model.inference import InferenceEngine
from model.nn.blend import ITEM_TERMS, BlendWeights, ContentReducer, DomainBlend, profile
from model.nn.config import BlendConfig
from tests.model.tiny_trained import train_tiny, write_tiny_bundle


def test_one_inner_product_is_the_weighted_sum_of_the_parts() -> None:
    g = torch.Generator().manual_seed(0)
    z_items = torch.randn(7, 4, generator=g)
    content = F.normalize(torch.randn(7, 3, generator=g), dim=1)
    degree = torch.tensor([0.0, 1, 2, 5, 9, 0, 3])
    blend = DomainBlend(
        DomainBlend.prior_of(degree), content, {"inductive": BlendWeights(0.7, 2.0, 1.5)}
    )
    z_user = torch.randn(1, 4, generator=g)
    p_user = F.normalize(torch.randn(1, 3, generator=g), dim=1)
    got = blend.users(z_user, "inductive", p_user) @ blend.items(z_items).T
    prior = torch.log1p(degree) / torch.log1p(degree.max())
    want = 0.7 * F.normalize(z_user, dim=1) @ z_items.T + 2.0 * prior + 1.5 * p_user @ content.T
    torch.testing.assert_close(got, want)
    assert float(prior.min()) == 0.0 and float(prior.max()) == pytest.approx(1.0)
    # an unknown user type is served by the model score alone
    alone = blend.users(z_user, "cross_domain", p_user) @ blend.items(z_items).T
    torch.testing.assert_close(alone, F.normalize(z_user, dim=1) @ z_items.T)


def test_a_registered_item_has_prior_zero_and_its_own_content() -> None:
    blend = DomainBlend(torch.zeros(2), torch.zeros(2, 3))
    c = torch.tensor([0.0, 1.0, 0.0])
    v = blend.new_item(torch.ones(4), c)
    assert v.tolist() == [1, 1, 1, 1, 0, 0, 1, 0]


def test_item_terms_lift_items_without_interactions_and_decay_content_with_degree() -> None:
    degree = torch.tensor([0, 1, 3, 0])
    plain = DomainBlend.prior_of(degree)
    lifted = DomainBlend.prior_of(degree, 0.4)
    assert plain[0] == plain[3] == 0.0 and lifted[0] == lifted[3] == pytest.approx(0.4)
    torch.testing.assert_close(lifted[1:3], plain[1:3])
    blend = DomainBlend(lifted, None, cold_prior=0.4)
    assert blend.new_item(torch.ones(2), None).tolist() == pytest.approx([1, 1, 0.4])
    assert DomainBlend.content_scale_of(degree, 0.0) is None
    scale = DomainBlend.content_scale_of(degree, 1.0)
    assert scale is not None and scale.tolist() == pytest.approx([1.0, 0.5, 0.25, 1.0])


def test_reducer_gives_unit_rows_and_keeps_items_without_content_at_zero() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    mask = np.ones(50, dtype=bool)
    x[3] = 0
    mask[3] = False
    r = ContentReducer.fit({"text": x}, {"text": mask}, 4)
    assert r is not None and r.dim == 4
    c = r.reduce({"text": x}, 50)
    norms = c.norm(dim=1)
    assert float(norms[3]) == 0.0
    assert torch.allclose(norms[np.flatnonzero(mask)], torch.ones(49), atol=1e-5)
    assert profile([], 4).tolist() == [0, 0, 0, 0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("blend")
    cfg, ds, split, feats, model = train_tiny(root, users=300, epochs=8)
    blend, report = fit_blend(model, split, feats, BlendConfig(trials=12, max_users=200))
    return root, cfg, ds, split, feats, model, blend, report


def test_fit_searches_the_corners_first_and_keeps_the_best_validation_objective(trained) -> None:  # type: ignore[no-untyped-def]
    *_, blend, report = trained
    for domain, by_type in report.items():
        for user_type, r in by_type.items():
            trials, chosen = r["trials"][:-1], r["trials"][-1]["chosen"]
            corners = [t["params"] for t in trials[:3]]
            # a pass with item terms (on by default) has them at 0 in its corners; an
            # inductive pass kept from a profile-weight search (a weight > 0 chosen) holds
            # the terms the fit chose before it (model.blendfit._fit_profile_other)
            assert [{k: v for k, v in c.items() if k not in ITEM_TERMS} for c in corners] == [
                dict(c) for c in CORNERS
            ], (domain, user_type)
            held = r["item_terms"] if r.get("profile_other") else {}
            assert all(c.get(t, 0.0) == held.get(t, 0.0) for c in corners for t in ITEM_TERMS)
            best = max(trials, key=lambda t: t["objective"])["params"]
            if user_type == "inductive":
                assert chosen == best
            else:  # one slice: the best trial, or the best corner by the one-SE rule
                assert chosen == best or chosen in corners
            w = blend.weights[domain][user_type]
            # stored weights = the chosen parameters, each divided by a positive spread
            for part in ("model", "prior", "content"):
                assert np.sign(getattr(w, part)) == np.sign(chosen[part]), (domain, part)
        assert blend.weights[domain]["none"] == BlendWeights(0.0, 1.0, 0.0)


def test_item_terms_are_fitted_with_the_inductive_weights_and_never_worse(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, _, split, feats, model, _, _ = trained
    # room for TPE after the designed starts; the profile mix off: its fits start afresh
    cfg = BlendConfig(trials=16, max_users=100, profile_other=(0.0,))
    _, plain = fit_blend(model, split, feats, replace(cfg, content_decay=False))
    blend, report = fit_blend(
        model, split, feats, replace(cfg, cold_prior=True, content_decay=True)
    )
    searched = 0
    for domain, by_type in report.items():
        r = by_type["inductive"]
        without = plain[domain]["inductive"]["trials"][-1]
        # started from the fit without them, so never worse on validation
        assert r["trials"][-1]["objective"] >= without["objective"]
        chosen = r["trials"][-1]["chosen"]
        terms = [t for t in ITEM_TERMS if t in chosen]
        if terms:  # the search with the terms won: it began at the plain choice, terms 0
            searched += 1
            trials = r["trials"][:-1]
            assert trials[3]["params"] == {**without["chosen"], **dict.fromkeys(terms, 0.0)}
            assert trials[3]["objective"] == pytest.approx(without["objective"])
            for t in terms:
                lo, hi = ITEM_TERMS[t]
                assert all(lo <= x["params"][t] <= hi for x in trials)
            assert r["trials"][-1]["objective"] > without["objective"]
        fitted = {t: chosen.get(t, 0.0) for t in ITEM_TERMS}
        assert r["item_terms"] == fitted
        assert blend.item_terms.get(domain, {}) == {t: v for t, v in fitted.items() if v}
        assert not set(ITEM_TERMS) & set(by_type["cross_domain"]["trials"][-1]["chosen"])
    assert searched > 0  # the tiny data lets at least one domain take a term


def test_item_terms_are_served_to_bundle_and_registered_items(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, _, _, split, feats, model, blend, _ = trained
    dom = sorted(split.domains)[0]
    blend = replace(blend, item_terms={dom: {"cold_prior": 0.37, "content_decay": 0.5}})
    b = load_bundle(_bundle(trained, tmp_path / "terms", blend=blend))
    assert b.blend is not None and b.blend.item_terms == blend.item_terms
    engine = InferenceEngine.from_bundle(b)
    d = model.config.dim
    vectors = engine.catalogue(dom).vectors
    degree = b.domains[dom].embedder.item_degree
    np.testing.assert_allclose(vectors[:, d], DomainBlend.prior_of(degree, 0.37).numpy(), rtol=1e-6)
    # content rows scaled by (1 + deg)^-0.5; the plain bundle's rows are the unscaled ones
    plain = InferenceEngine.from_bundle(
        load_bundle(_bundle(trained, tmp_path / "p", blend=replace(blend, item_terms={})))
    )
    c_plain = plain.catalogue(dom).vectors[:, d + 1 :]
    want = c_plain * (1.0 + degree.numpy()[:, None]) ** -0.5
    np.testing.assert_allclose(vectors[:, d + 1 :], want, rtol=1e-5, atol=1e-6)
    # a registered item: the cold prior, and its content at full weight (degree 0)
    text = np.asarray(feats.rows([split.domains[dom].item_ids[0]]).modalities["text"].vectors[0])
    vec = engine.add_item("new-term", dom, {"text": text})
    ref = plain.add_item("new-term", dom, {"text": text})
    assert vec[d] == pytest.approx(0.37) and ref[d] == 0.0
    np.testing.assert_allclose(vec[d + 1 :], ref[d + 1 :], rtol=1e-6)


def test_a_bundle_with_an_unknown_item_term_is_refused_in_one_line(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    blend = trained[6]
    out = _bundle(
        trained, tmp_path / "unknown", blend=replace(blend, item_terms={"arts": {"x": 1.0}})
    )
    with pytest.raises(BundleError, match=r"unknown blend item terms \['x'\]"):
        load_bundle(out)


def _bundle(trained, out, **blend):  # type: ignore[no-untyped-def]
    _, cfg, ds, split, feats, model, _, _ = trained
    return write_tiny_bundle(out, cfg, ds, split, feats, model, **blend)


def test_bundle_round_trip_serves_the_blend(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, _, _, split, feats, model, blend, report = trained
    out = _bundle(trained, tmp_path / "bundle", blend=blend, tuning={"blend": report})
    b = load_bundle(out)
    assert b.blend is not None and b.blend.reducer is not None
    assert b.blend.weights_json() == blend.weights_json()
    torch.testing.assert_close(b.blend.reducer.basis, blend.reducer.basis)  # type: ignore[union-attr]
    assert (out / "tuning.json").is_file()
    engine = InferenceEngine.from_bundle(b)
    d = split.domains
    dom = sorted(d)[0]
    cat = engine.catalogue(dom)
    r = blend.reducer
    assert r is not None
    assert cat.vectors.shape[1] == model.config.dim + 1 + r.dim == engine.dim
    # a registered item: prior 0, content part = the reducer's c of its features
    text = np.asarray(feats.rows([d[dom].item_ids[0]]).modalities["text"].vectors[0])
    vec = engine.add_item("new-1", dom, {"text": text})
    assert vec[model.config.dim] == 0.0
    want_c = r.reduce({"text": text.reshape(1, -1)}, 1)[0].numpy()
    np.testing.assert_allclose(vec[model.config.dim + 1 :], want_c, rtol=1e-5, atol=1e-6)
    emb = engine.embed_user(dom, {dom: ["new-1"]})
    assert emb.vector.shape == (engine.dim,)
    # one batched call embeds every kind of user exactly as one call per user does
    other = sorted(d)[1]
    histories = [
        {dom: d[dom].item_ids[:3]},
        {other: d[other].item_ids[:2]},  # cross-domain
        {},  # nothing: the user token
        {dom: ["new-1", d[dom].item_ids[4]], other: d[other].item_ids[2:4]},
        {other: ["not-an-item"]},
    ]
    batched = engine.embed_users(dom, histories)
    assert [e.method for e in batched] == ["inductive", "cross_domain", "none", "inductive", "none"]
    for h, got in zip(histories, batched, strict=True):
        one = engine.embed_user(dom, h)
        assert got.method == one.method and got.n_history == one.n_history
        np.testing.assert_allclose(got.vector, one.vector, rtol=1e-5, atol=1e-6)


def test_save_bundle_without_blend_serves_model_vectors(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = trained[5]
    engine = InferenceEngine.from_bundle(load_bundle(_bundle(trained, tmp_path / "plain")))
    assert engine.dim == model.config.dim
