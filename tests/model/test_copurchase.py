"""The cross-domain co-purchase block (model.nn.copurchase): what it fits, what validation
may not leak into it, how its weight is chosen (model.blendfit), and that the service
serves it exactly as the offline evaluation scores it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model.blendfit import _SliceParts, fit_blend
from model.bundle import BundleError, load_bundle
from model.copurchasefit import anchor_rows, fit_copurchase_weight
from model.evaluation import slice_inputs
from model.inference import InferenceEngine
from model.nn.blend import BlendWeights
from model.nn.config import BlendConfig
from model.nn.copurchase import CoPurchase, fit_copurchase
from model.rankers import MICRecRanker, other_domain_histories
from tests.model.tiny_trained import train_tiny, write_tiny_bundle


def _toy() -> dict[str, tuple[list[str], int, np.ndarray]]:
    """Two domains; anchors u0..u3 buy a0 with b0 and a1 with b1 (u4 only in a)."""
    a_users = ["u0", "u1", "u2", "u3", "u4"]
    b_users = ["u3", "u2", "u1", "u0"]  # another order: users are matched by id
    a = np.array([[0, 0], [1, 0], [2, 1], [3, 1], [4, 2]])
    b_of = {"u0": 0, "u1": 0, "u2": 1, "u3": 1}
    b = np.array([[b_users.index(u), j] for u, j in b_of.items()])
    return {"a": (a_users, 3, a), "b": (b_users, 3, b)}


def test_the_block_ranks_what_anchors_bought_with_the_users_items() -> None:
    cp = fit_copurchase(_toy(), rank=2)
    assert cp is not None and cp.rank == 2
    assert cp.items["b"].shape == (3, 2) and cp.sources[("a", "b")].shape == (3, 2)
    # rank 2 holds P exactly: a0 -> b0, a1 -> b1; a2 and b2 have no anchor pairs
    recon = cp.sources[("a", "b")] @ cp.items["b"].T
    torch.testing.assert_close(recon, torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 0]]))
    q = cp.users("b", [{"a": np.array([0])}, {"a": np.array([1, 1])}, {"a": np.array([2])}])
    s = q @ cp.items["b"].T
    assert s[0].argmax() == 0 and s[1].argmax() == 1
    torch.testing.assert_close(s[2], torch.zeros(3))  # only items nobody co-bought: 0
    # the target domain's own history and rows past the source (registered items) are not read
    q2 = cp.users("b", [{"a": np.array([0, 7]), "b": np.array([1])}])
    torch.testing.assert_close(q2, q[:1])


def test_factors_round_trip_and_a_wrong_shape_is_refused() -> None:
    cp = fit_copurchase(_toy(), rank=2)
    assert cp is not None
    back = CoPurchase.from_state(cp.meta(), cp.tensors())
    for name, t in cp.tensors().items():
        torch.testing.assert_close(back.tensors()[name], t)
    bad = dict(cp.tensors())
    bad["items.0"] = torch.zeros(3, 5)
    with pytest.raises(ValueError, match="rank 2"):
        CoPurchase.from_state(cp.meta(), bad)


def _parts(informative: bool, seed: int = 0) -> _SliceParts:
    """300 users, 50 items bought by popularity (the prior knows it; the model part
    knows nothing); the co-purchase part points at each user's target (``informative``)
    or away from it."""
    g = torch.Generator().manual_seed(seed)
    b, n, q = 300, 50, 8
    popularity = torch.linspace(1.0, 0.02, n)
    targets = torch.multinomial(popularity, b, replacement=True, generator=g)
    qi = torch.nn.functional.normalize(torch.randn(n, q, generator=g), dim=1)
    qu = qi[targets] if informative else -qi[targets]
    return _SliceParts(
        name="cd_pseudo_cold",
        zu=torch.nn.functional.normalize(torch.randn(b, 4, generator=g), dim=1),
        zi=torch.randn(n, 4, generator=g),
        prior=popularity,
        degree=torch.ones(n),
        pu=None,
        ci=None,
        exclude=torch.zeros(b, n, dtype=torch.bool),
        targets=[np.array([int(t)]) for t in targets],
        k=n,
        qu=qu,
        qi=qi,
    )


@pytest.mark.parametrize("informative", [True, False])
def test_the_weight_is_kept_only_when_validation_says_it_helps(informative: bool) -> None:
    part = _parts(informative)
    plain_w = {"model": 0.0, "prior": 1.0}  # what the fit without the block chose
    plain = [{"chosen": plain_w, "reference": [[0.1], 0.1]}]
    w, trials = fit_copurchase_weight(part, "toy", plain)
    _, sp, _, _ = part.spreads()
    without = part.ndcg(BlendWeights(0.0, 1.0 / sp, 0.0))
    if informative:
        assert w.copurchase > 0
        assert trials[-1]["main_ndcg"] > without
    else:  # a block that misleads is never kept: the plain choice stays
        assert w.copurchase == 0
        assert trials[-1]["main_ndcg"] == pytest.approx(without)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("copurchase")
    return train_tiny(root, users=400, epochs=6, model={"variant": "inmo"})


def test_validation_rows_never_reach_the_fit(trained) -> None:  # type: ignore[no-untyped-def]
    """The pseudo-cold users' rows (validation hides them from those users) are left out:
    the fit is the same whatever they bought in that domain."""
    _, _, split, _, _ = trained
    for d in split.domains:
        pseudo = set(split.pseudo_cold_users(d).tolist())
        assert pseudo and not pseudo & set(anchor_rows(split, d)[:, 0].tolist())
    dst = sorted(split.domains)[0]
    ds = split.domains[dst]
    before = fit_copurchase(
        {d: (s.user_ids, s.n_items, anchor_rows(split, d)) for d, s in split.domains.items()}, 4
    )
    theirs = np.isin(ds.train[:, 0], split.pseudo_cold_users(dst))
    saved = ds.train
    ds.train = ds.train.copy()
    ds.train[theirs, 1] = (ds.train[theirs, 1] + 1) % ds.n_old_items  # other items
    try:
        after = fit_copurchase(
            {d: (s.user_ids, s.n_items, anchor_rows(split, d)) for d, s in split.domains.items()},
            4,
        )
    finally:
        ds.train = saved
    assert before is not None and after is not None
    for name, t in before.tensors().items():
        torch.testing.assert_close(after.tensors()[name], t)


def test_users_new_to_a_domain_are_served_as_evaluated(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A bundle with the block: the service's user vector (block included) and item
    vectors equal the offline evaluation's, so the served ranking is the evaluated one."""
    cfg, ds, split, feats, model = trained
    blend, _ = fit_blend(
        model, split, feats, BlendConfig(trials=3, content_dim=8, copurchase_rank=4)
    )
    assert blend.copurchase is not None and blend.copurchase.rank == 4
    dst = sorted(split.domains)[0]
    # a nonzero weight, so the block is part of the compared vectors whatever the fit chose
    w = blend.weights[dst].get("cross_domain", BlendWeights())
    blend.weights[dst]["cross_domain"] = replace(w, copurchase=0.7)
    out = write_tiny_bundle(tmp_path / "b", cfg, ds, split, feats, model, blend=blend)
    bundle = load_bundle(out)
    assert bundle.blend is not None and bundle.blend.copurchase is not None
    ranker = MICRecRanker("probe", bundle.model, split, feats, blend=bundle.blend)
    inputs = slice_inputs(split, dst, "standard")
    scorer = ranker.bind(inputs)
    users = split.pseudo_cold_users(dst)[:6]
    zu, types, prof, cop = scorer.parts(dst, users, cross_domain=True)  # type: ignore[attr-defined]
    assert set(types) == {"cross_domain"} and cop is not None and bool(cop.abs().sum() > 0)
    blend_d = scorer.blends[dst]  # type: ignore[attr-defined]
    want = blend_d.users(zu, "cross_domain", prof, cop).numpy()
    engine = InferenceEngine.from_bundle(bundle)
    assert engine.dim == model.config.dim + 1 + 8 + 4
    hists = other_domain_histories(split, dst, users, inputs, ranker.maps)
    for k, hist in enumerate(hists):
        history = {d: [split.domains[d].item_ids[i] for i in items] for d, items in hist.items()}
        got = engine.embed_user(dst, history)
        assert got.method == "cross_domain"
        np.testing.assert_allclose(got.vector, want[k], rtol=1e-4, atol=1e-5)
        # the block's part of the vector is the weighted co-purchase part, not zeros
        np.testing.assert_allclose(got.vector[-4:], 0.7 * cop[k].numpy(), rtol=1e-4, atol=1e-6)
    items = scorer.items[dst]  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        engine.catalogue(dst).vectors[:5], blend_d.items(items)[:5].numpy(), rtol=1e-4, atol=1e-5
    )


def test_a_bundle_missing_the_factors_file_is_refused(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, ds, split, feats, model = trained
    blend, _ = fit_blend(
        model, split, feats, BlendConfig(trials=3, content_dim=0, copurchase_rank=2)
    )
    out = write_tiny_bundle(tmp_path / "b", cfg, ds, split, feats, model, blend=blend)
    (out / "copurchase.safetensors").unlink()
    with pytest.raises(BundleError):
        load_bundle(out)
