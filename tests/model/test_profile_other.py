"""The other-domain content profile of users with history in a domain
(model.nn.blend.DomainBlend.mix_profiles, ``[blend] profile_other``): its arithmetic, its
fit on validation (model.blendfit), the bundle record, and that the engine serves it
exactly as the offline evaluation scores it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.blendfit import fit_blend
from model.bundle import BundleError, load_bundle
from model.evaluation import slice_inputs
from model.inference import InferenceEngine
from model.nn.blend import ITEM_TERMS, BlendWeights, DomainBlend
from model.nn.config import BlendConfig
from model.rankers import MICRecRanker, other_domain_histories
from tests.model.tiny_trained import train_tiny, write_tiny_bundle


def test_the_mix_is_the_normalised_sum_and_zero_leaves_the_own_profile() -> None:
    own = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), dim=1)
    other = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    blend = DomainBlend(torch.zeros(4), torch.zeros(4, 3))
    assert torch.equal(blend.mix_profiles(own, other), own)  # 0: off
    blend.profile_other = 0.5
    got = blend.mix_profiles(own, other)
    torch.testing.assert_close(got[0], F.normalize(torch.tensor([1.0, 0.5, 0.0]), dim=0))
    torch.testing.assert_close(got[1], own[1])  # no other-domain items: their own profile
    torch.testing.assert_close(got[2], torch.tensor([0.0, 0.0, 1.0]))  # no content here
    assert torch.equal(blend.mix_profiles(own, None), own)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("profile-other")
    return train_tiny(root, users=400, epochs=6, model={"variant": "inmo"})


def test_each_domain_keeps_the_weight_with_the_best_validation_objective(trained) -> None:  # type: ignore[no-untyped-def]
    """Every weight of the grid (0 too) gets the same search from the parameters fitted
    without the mix, recorded; the chosen one has the highest objective (0 unless another
    is strictly higher), its search is kept (for 0: the blend fitted without the mix),
    the blend agrees, ``[0.0]`` searches nothing more, and the item side is the fit
    without the mix's."""
    _, _, split, feats, model = trained
    blend, report = fit_blend(
        model, split, feats, BlendConfig(trials=4, content_dim=8, copurchase=False)
    )
    without, none = fit_blend(
        model,
        split,
        feats,
        BlendConfig(trials=4, content_dim=8, copurchase=False, profile_other=(0.0,)),
    )
    chose = []
    for d in split.domains:
        r = report[d]["inductive"]
        by = r["objective_by_profile_other"]
        assert set(by) == {"0", "0.25", "0.5"}  # the default grid
        best = max(by.values())
        want = 0.0 if by["0"] == best else float(next(k for k, v in by.items() if v == best))
        assert r["profile_other"] == want
        assert blend.profile_other.get(d, 0.0) == want
        if want:  # the search at the chosen weight is kept
            assert by[f"{want:g}"] > by["0"]
            assert r["trials"][-1]["objective"] == pytest.approx(by[f"{want:g}"])
        else:  # the blend as fitted without the mix
            assert r["weights"] == none[d]["inductive"]["weights"]
        chose.append(want)
    assert any(chose)  # this data has a domain where the mix helps: both branches run
    assert all(
        none[d]["inductive"]["objective_by_profile_other"].keys() == {"0"} for d in split.domains
    )
    assert all(none[d]["inductive"]["profile_other"] == 0.0 for d in split.domains)
    # user side only: the item terms (one item vector serves every user type) are the
    # ones the fit without the mix chose, and the kept search records them
    assert blend.item_terms == without.item_terms
    for d in split.domains:
        chosen = report[d]["inductive"]["trials"][-1]["chosen"]
        assert {t: chosen.get(t, 0.0) for t in ITEM_TERMS} == none[d]["inductive"]["item_terms"]


def test_users_with_history_are_served_with_the_mix_as_evaluated(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A bundle with ``profile_other``: the engine's vector of a user with history in the
    domain and in another one scores every item as the offline evaluation does, and the
    mix moved those scores (the check sees a profile built from the own items only)."""
    cfg, ds, split, feats, model = trained
    blend, _ = fit_blend(
        model, split, feats, BlendConfig(trials=3, content_dim=8, copurchase=False)
    )
    dst = sorted(split.domains)[0]
    w = blend.weights[dst]["inductive"]
    blend.weights[dst]["inductive"] = BlendWeights(w.model, w.prior, w.content or 2.0)
    blend.profile_other = {dst: 0.5}
    out = write_tiny_bundle(tmp_path / "b", cfg, ds, split, feats, model, blend=blend)
    bundle = load_bundle(out)
    assert bundle.blend is not None and bundle.blend.profile_other == {dst: 0.5}
    ranker = MICRecRanker("probe", bundle.model, split, feats, blend=bundle.blend)
    inputs = slice_inputs(split, dst, "standard")
    users = split.pseudo_cold_users(dst)[:6]  # users of both domains
    want = ranker.bind(inputs).scores(dst, users, cross_domain=False).numpy()
    bundle.blend.profile_other = {}
    own_only = ranker.bind(inputs).scores(dst, users, cross_domain=False).numpy()
    assert np.abs(want - own_only).max() > 1e-3  # the mix is part of what is compared
    engine = InferenceEngine.from_bundle(load_bundle(out))
    cat = engine.catalogue(dst)
    hists = other_domain_histories(split, dst, users, inputs, ranker.maps)
    for k, hist in enumerate(hists):
        assert hist  # every user has items in another domain
        history = {d: [split.domains[d].item_ids[i] for i in items] for d, items in hist.items()}
        own = inputs[dst][inputs[dst][:, 0] == users[k], 1]
        history[dst] = [split.domains[dst].item_ids[i] for i in own]
        got = engine.embed_user(dst, history)
        assert got.method == "inductive"
        np.testing.assert_allclose(cat.vectors @ got.vector, want[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [-0.5, float("nan")])
def test_a_bundle_with_a_bad_weight_is_refused(trained, tmp_path, bad: float) -> None:  # type: ignore[no-untyped-def]
    cfg, ds, split, feats, model = trained
    blend, _ = fit_blend(
        model,
        split,
        feats,
        BlendConfig(trials=3, content_dim=8, copurchase=False, profile_other=(0.0,)),
    )
    out = write_tiny_bundle(tmp_path / "b", cfg, ds, split, feats, model, blend=blend)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["blend"]["profile_other"] = {sorted(split.domains)[0]: bad}
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="profile_other must be finite and >= 0"):
        load_bundle(out)
