"""The cross-domain co-purchase boost (model.nn.copurchase): what it fits, what validation
may not leak into it, how its weight is chosen (model.copurchasefit), and that the engine
scores it exactly as the offline evaluation does (the service's re-ranking stage:
tests/app/serving/test_copurchase.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import model.copurchasefit as copurchasefit
from model.blendfit import fit_blend
from model.blendparts import addon_reference, blend_objective
from model.bundle import BundleError, load_bundle
from model.copurchasefit import (
    COPURCHASE_GRID,
    chosen_pop,
    fit_copurchase_for_rule,
    fit_copurchase_weights,
    fit_warm_copurchase,
)
from model.evaluation import PSEUDO_COLD_SLICE, slice_inputs
from model.inference import InferenceEngine
from model.nn.blend import Blend, BlendWeights
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


def test_the_boost_ranks_what_anchors_bought_with_the_users_items() -> None:
    cp = fit_copurchase(_toy())
    assert set(cp.transitions) == {("a", "b"), ("b", "a")}
    # a0 -> b0, a1 -> b1; a2 and b2 have no anchor pairs
    np.testing.assert_allclose(
        cp.transitions[("a", "b")].toarray(), [[1.0, 0, 0], [0, 1, 0], [0, 0, 0]]
    )
    c = cp.boosts("b", [{"a": np.array([0])}, {"a": np.array([1, 1])}, {"a": np.array([2])}], 3)
    np.testing.assert_allclose(c.toarray(), [[1.0, 0, 0], [0, 1, 0], [0, 0, 0]])
    # the target domain's own history and rows past the source (registered items) are not
    # read; a user with items of both kinds is max-normalised to 1
    c2 = cp.boosts("b", [{"a": np.array([0, 7]), "b": np.array([1])}, {"a": np.array([0, 1])}], 3)
    np.testing.assert_allclose(c2.toarray(), [[1.0, 0, 0], [1.0, 1.0, 0]])
    rows = cp.boost_rows("b", [{"a": np.array([1])}, {}], 3)
    assert rows[0][0].tolist() == [1] and rows[0][1].tolist() == [1.0]
    assert len(rows[1][0]) == 0
    with pytest.raises(ValueError, match="3 items, not 4"):
        cp.boosts("b", [{"a": np.array([0])}], 4)
    # a batch where nobody has items elsewhere: empty rows of the right shape and type
    # (the shortcut the service takes for such batches), and the size is still checked
    none = cp.boosts("b", [{"b": np.array([0, 1])}, {}], 3)
    assert none.shape == (2, 3) and none.nnz == 0 and none.dtype == np.float32
    with pytest.raises(ValueError, match="3 items, not 4"):
        cp.boosts("b", [{}], 4)


def test_each_source_item_keeps_its_largest_shares() -> None:
    """``top`` bounds a source item's row: the largest shares stay, ties by item order."""
    users = [f"u{k}" for k in range(6)]
    # every user bought a0; in b, u0-u2 bought b0, u3-u4 b1, u5 b2
    a = np.array([[k, 0] for k in range(6)])
    b = np.array([[0, 0], [1, 0], [2, 0], [3, 1], [4, 1], [5, 2]])
    full = fit_copurchase({"a": (users, 1, a), "b": (users, 3, b)}, top=0)
    two = fit_copurchase({"a": (users, 1, a), "b": (users, 3, b)}, top=2)
    assert full is not None and two is not None
    np.testing.assert_allclose(full.transitions[("a", "b")].toarray(), [[0.5, 2 / 6, 1 / 6]])
    np.testing.assert_allclose(two.transitions[("a", "b")].toarray(), [[0.5, 2 / 6, 0.0]])


def test_a_boost_keeps_its_largest_items_when_capped() -> None:
    """``max_items``: each user's boost keeps its largest entries (ties: the lower item),
    normalised after the cut; it survives the bundle round trip and a refit."""
    users = [f"u{k}" for k in range(6)]
    a = np.array([[k, 0] for k in range(6)])  # everyone bought a0
    b = np.array([[0, 0], [1, 0], [2, 0], [3, 1], [4, 1], [5, 2]])  # b0 x3, b1 x2, b2 x1
    graph = {"a": (users, 1, a), "b": (users, 3, b)}
    cp = fit_copurchase(graph, top=0)
    full = cp.boosts("b", [{"a": np.array([0])}], 3).toarray()
    np.testing.assert_allclose(full, [[1.0, 2 / 3, 1 / 3]])
    cp.max_items = 2
    np.testing.assert_allclose(
        cp.boosts("b", [{"a": np.array([0])}], 3).toarray(), [[1.0, 2 / 3, 0]]
    )
    back = CoPurchase.from_state(cp.meta(), cp.tensors())
    assert back.max_items == 2 and back.on_graph(graph).max_items == 2
    with pytest.raises(ValueError, match="max_items"):
        CoPurchase.from_state({**cp.meta(), "max_items": -1}, cp.tensors())


def test_anchor_votes_and_the_popularity_exponent() -> None:
    """``anchor_norm`` 1: an anchor's target items share one vote; ``pop``: a target item's
    entries fall with its buyers; both survive the bundle round trip."""
    users = [f"u{k}" for k in range(4)]
    a = np.array([[k, 0] for k in range(4)])  # everyone bought a0
    # u0 bought b0 and b1; u1, u2, u3 bought b1 only
    b = np.array([[0, 0], [0, 1], [1, 1], [2, 1], [3, 1]])
    graph = {"a": (users, 1, a), "b": (users, 2, b)}
    plain = fit_copurchase(graph, top=0).transitions[("a", "b")].toarray()
    np.testing.assert_allclose(plain, [[1 / 5, 4 / 5]])  # item pairs: 1 of 5 went to b0
    votes = fit_copurchase(graph, top=0, anchor_norm=1.0).transitions[("a", "b")].toarray()
    np.testing.assert_allclose(votes, [[0.5 / 4, 3.5 / 4]])  # u0's vote split in two
    pop = fit_copurchase(graph, top=0, pop={"b": 1.0})
    # b1's 4 buyers: 4 pairs / 4, b0's 1: 1 / 1; the exponent is the target domain's
    np.testing.assert_allclose(pop.transitions[("a", "b")].toarray(), [[0.5, 0.5]])
    np.testing.assert_allclose(
        pop.transitions[("b", "a")].toarray(),
        fit_copurchase(graph, top=0).transitions[("b", "a")].toarray(),
    )
    cp = fit_copurchase(graph, top=0, anchor_norm=1.0, pop={"b": 0.5})
    back = CoPurchase.from_state(cp.meta(), cp.tensors())
    assert (back.anchor_norm, back.pop) == (1.0, {"b": 0.5})
    with pytest.raises(ValueError, match="nonnegative"):
        CoPurchase.from_state({**cp.meta(), "pop": {"b": -1.0}}, cp.tensors())
    assert back.on_graph(graph).transitions[("a", "b")].toarray() == pytest.approx(
        cp.transitions[("a", "b")].toarray()
    )


def test_the_boost_of_users_with_history_must_pay_for_what_it_costs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The warm boost's objective: its gain on ``all`` (against the best single part)
    minus what the other slices lose; a slice may lose for free down to its best single
    part, and a slice the blend already left below it is charged against the blend
    without the boost (against the single part alone the loss is discounted by how far
    below it the slice is). Evaluation is faked: the scripted validation NDCG."""
    blend = Blend(None, {})
    plain = BlendWeights(0.5, 0.2, 0.0)
    domains = ("below", "above")
    blend.weights = {d: {"inductive": plain} for d in domains}
    units = {"below": 2.0, "above": 1.0}
    model, prior = BlendWeights(1.0, 0.0, 0.0), BlendWeights(0.0, 1.0, 0.0)
    # the prior alone ranks cold items among all at 0.06 in "below": the blend's 0.05 misses it
    prior_cold = {"below": 0.06, "above": 0.03}

    def fake_evaluate(ranker: Any, split: Any, **kw: Any) -> dict[str, Any]:
        assert kw["stage"] == "val" and kw["only"] == ["all", "cold_items_vs_all"]
        out: dict[str, Any] = {}
        for d, ws in blend.weights.items():
            w = ws["inductive"]
            if w == model:
                value = {"all": 0.10, "cold_items_vs_all": 0.0}
            elif w == prior:
                value = {"all": 0.05, "cold_items_vs_all": prior_cold[d]}
            else:  # the boost: +3.5 % of the best part on all, cold items 0.05 -> 0.048
                boosted = w.copurchase > 0
                value = {
                    "all": 0.10 + 0.0035 * boosted,
                    "cold_items_vs_all": 0.05 - 0.002 * boosted,
                }
            out[d] = {s: {"ndcg@20": v} for s, v in value.items()}
        return out

    monkeypatch.setattr(copurchasefit, "evaluate", fake_evaluate)
    report: dict[str, Any] = {d: {} for d in domains}
    split = SimpleNamespace(domains=dict.fromkeys(domains))
    fit_warm_copurchase(blend, split, None, ("all", "cold_items_vs_all"), units, report)  # type: ignore[arg-type]
    below = report["below"]["inductive"]["copurchase"]
    assert below["reference"] == {"all": 0.10, "cold_items_vs_all": 0.05}  # the plain blend's
    assert below["objective"]["0.25"] == pytest.approx(1.035 - 0.04)  # -4 % of 0.05
    assert below["chosen"] == 0.0 and blend.weights["below"]["inductive"] == plain
    # against the single part alone the loss looked smaller (0.002 / 0.06) than the gain
    assert blend_objective(below["val_ndcg@20"]["0.25"], below["best_single_part"], "all") > (
        blend_objective(below["val_ndcg@20"]["0"], below["best_single_part"], "all")
    )
    # a slice that stays above its best single part loses for free: the boost is kept,
    # at the first grid value of equals, in units of the domain's spread
    above = report["above"]["inductive"]["copurchase"]
    assert above["reference"] == {"all": 0.10, "cold_items_vs_all": 0.03}
    assert above["chosen"] == COPURCHASE_GRID[0]
    assert blend.weights["above"]["inductive"] == replace(plain, copurchase=COPURCHASE_GRID[0])


def test_the_warm_boosts_yardstick_is_the_lower_of_the_floor_and_the_plain_blend() -> None:
    best = {"all": 0.10, "cold": 0.06, "rare": 0.02}
    plain = {"all": 0.12, "cold": 0.05, "rare": 0.03}
    ref = addon_reference(best, plain, "all")
    assert ref == {"all": 0.10, "cold": 0.05, "rare": 0.02}
    # a loss from 0.05 to 0.045 costs 10 % against the plain blend, not 8.3 % of the floor
    boosted = {"all": 0.12, "cold": 0.045, "rare": 0.025}  # rare stays above its floor
    assert blend_objective(boosted, ref, "all") == pytest.approx(1.2 - 0.1)


def test_transitions_round_trip_and_a_corrupt_file_is_refused() -> None:
    cp = fit_copurchase(_toy())
    assert cp is not None
    back = CoPurchase.from_state(cp.meta(), cp.tensors())
    for name, t in cp.tensors().items():
        torch.testing.assert_close(back.tensors()[name], t)
    corrupt = {
        "0.indices": (torch.tensor([0, 9]), "outside 0..2"),
        "0.data": (torch.tensor([1.0, -1.0]), "nonnegative"),
        "0.indptr": (torch.tensor([0, 2, 1, 2]), "not increasing"),
    }
    for name, (value, message) in corrupt.items():
        bad = dict(cp.tensors())
        bad[name] = value
        with pytest.raises(ValueError, match=message):
            CoPurchase.from_state(cp.meta(), bad)


def test_each_domain_keeps_the_weight_its_validation_users_prefer() -> None:
    """One evaluation per grid value serves every domain; a domain keeps the value with the
    best validation NDCG, and no boost unless a value does strictly better (ties: none)."""
    calls: list[dict[str, float]] = []

    def ndcg(trial):  # type: ignore[no-untyped-def]
        g = {d: w.copurchase / units[d] for d, w in trial.items()}
        calls.append(g)
        return {
            "helped": 0.10 - 0.01 * (g["helped"] - 2.0) ** 2,  # peaks at 2
            "misled": 0.05 - 0.001 * g["misled"],  # falls with any boost
            "flat": 0.03,  # no difference at all
        }

    plain = {d: BlendWeights(0.5, 0.2, 0.1) for d in ("helped", "misled", "flat")}
    units = {"helped": 0.5, "misled": 2.0, "flat": 1.0}
    chosen, report = fit_copurchase_weights(plain, units, ndcg)
    assert len(calls) == 1 + len(COPURCHASE_GRID)
    assert chosen["helped"] == replace(plain["helped"], copurchase=2.0 * 0.5)
    assert chosen["misled"] == plain["misled"] and chosen["flat"] == plain["flat"]
    assert report["helped"]["chosen"] == 2.0 and report["misled"]["chosen"] == 0.0
    assert report["helped"]["val_ndcg@20"]["2"] == pytest.approx(0.10)


def test_each_domain_keeps_the_popularity_exponent_its_validation_users_prefer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each exponent of ``pops`` refits the transitions (the ranker binds the blend's
    transitions); a domain keeps the (exponent, weight) with the best validation NDCG,
    the first exponent unless another does strictly better; the rule's record keeps it."""
    blend = Blend(None, {}, copurchase=CoPurchase())
    assert blend.copurchase is not None

    def fake_evaluate(ranker: Any, split: Any, **kw: Any) -> dict[str, Any]:
        assert kw["only"] == [PSEUDO_COLD_SLICE] and kw["stage"] == "val"
        pop, boosted = (
            blend.copurchase.pop,
            {  # type: ignore[union-attr]
                d: blend.weights[d]["cross_domain"].copurchase > 0 for d in blend.weights
            },
        )
        value = {
            "a": 0.10 + 0.02 * pop["a"] * boosted["a"],  # the discount helps a's boost
            "b": 0.10 + 0.01 * boosted["b"] - 0.02 * pop["b"] * boosted["b"],
        }
        return {d: {PSEUDO_COLD_SLICE: {"ndcg@20": v}} for d, v in value.items()}

    monkeypatch.setattr(copurchasefit, "evaluate", fake_evaluate)
    split = SimpleNamespace(domains={"a": None, "b": None})
    cross = {d: (BlendWeights(0.5, 0.2, 0.1), {"trials": [{}]}) for d in ("a", "b")}
    fit_copurchase_for_rule(blend, split, None, cross, {"a": 1.0, "b": 1.0}, (0.0, 0.5))  # type: ignore[arg-type]
    assert chosen_pop(cross) == {"a": 0.5, "b": 0.0}
    assert blend.copurchase.pop == {}  # the caller sets the chosen rule's exponents
    assert cross["a"][0].copurchase > 0 and cross["b"][0].copurchase > 0
    assert cross["a"][1]["trials"][-1]["main_ndcg"] == pytest.approx(0.11)
    assert set(cross["a"][1]["copurchase"]["by_pop"]) == {"0", "0.5"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("copurchase")
    return train_tiny(root, users=400, epochs=6, model={"variant": "inmo"})


def test_validation_rows_never_reach_the_fit(trained) -> None:  # type: ignore[no-untyped-def]
    """The transitions the pseudo-cold validation slice is scored with are fitted on its
    inputs, which hide those users' target-domain rows: they are the same whatever the
    users bought there (a fit on ``train`` would change)."""
    _, _, split, feats, model = trained
    dst = sorted(split.domains)[0]
    ds = split.domains[dst]
    blend = Blend(None, {}, copurchase=CoPurchase())
    ranker = MICRecRanker("probe", model, split, feats, blend=blend)

    def fitted() -> tuple[CoPurchase, CoPurchase]:
        hidden = ranker.bind(slice_inputs(split, dst, "cd_pseudo")).copurchase  # type: ignore[attr-defined]
        full = ranker.bind(slice_inputs(split, dst, "standard")).copurchase  # type: ignore[attr-defined]
        return hidden, full

    before, full_before = fitted()
    theirs = np.isin(ds.train[:, 0], split.pseudo_cold_users(dst))
    assert theirs.any()
    saved = ds.train
    ds.train = ds.train.copy()
    ds.train[theirs, 1] = (ds.train[theirs, 1] + 1) % ds.n_old_items  # other items
    try:
        after, full_after = fitted()
    finally:
        ds.train = saved
    for name, t in before.tensors().items():
        torch.testing.assert_close(after.tensors()[name], t)
    changed = [
        name
        for name, t in full_before.tensors().items()
        if t.shape != full_after.tensors()[name].shape
        or not torch.equal(t, full_after.tensors()[name])
    ]
    assert changed  # the check can see a leak: the full inputs' fit moves


@pytest.mark.parametrize("user_type", ["cross_domain", "inductive"])
def test_users_are_served_with_the_boost_as_evaluated(trained, tmp_path, user_type) -> None:  # type: ignore[no-untyped-def]
    """A bundle with the boost: the engine's inner product + its boost equals the offline
    evaluation's score of every item, so the served ranking is the evaluated one; for
    users new to the domain and for users with history there too (their boost from their
    other-domain items, ``[blend] copurchase_warm``)."""
    cfg, ds, split, feats, model = trained
    blend, report = fit_blend(
        model, split, feats, BlendConfig(trials=3, content_dim=8, copurchase=True)
    )
    assert blend.copurchase is not None  # fitted on the bundle's graph when it is written
    dst = sorted(split.domains)[0]
    assert "copurchase" in report[dst]["inductive"]  # the warm fit ran (on by default)
    # a nonzero weight, so the boost is part of the compared scores whatever the fit chose
    w = blend.weights[dst].get(user_type, BlendWeights())
    blend.weights[dst][user_type] = replace(w, copurchase=0.7)
    blend.copurchase.pop = {dst: 0.5}  # a discounted domain: refitted on the bundle's graph
    blend.copurchase.max_items = 3  # and cut boosts: the evaluation cuts the same way
    out = write_tiny_bundle(tmp_path / "b", cfg, ds, split, feats, model, blend=blend)
    bundle = load_bundle(out)
    assert bundle.blend is not None and bundle.blend.copurchase is not None
    assert bundle.blend.copurchase.nnz > 0 and bundle.blend.copurchase.pop == {dst: 0.5}
    ranker = MICRecRanker("probe", bundle.model, split, feats, blend=bundle.blend)
    inputs = slice_inputs(split, dst, "standard")
    scorer = ranker.bind(inputs)
    users = split.pseudo_cold_users(dst)[:6]  # users of both domains
    want = scorer.scores(dst, users, cross_domain=user_type == "cross_domain").numpy()
    engine = InferenceEngine.from_bundle(bundle)
    assert engine.dim == model.config.dim + 1 + 8  # the boost is no part of the vectors
    cat = engine.catalogue(dst)
    hists = other_domain_histories(split, dst, users, inputs, ranker.maps)
    boosted = 0
    lengths: list[int] = []
    for k, hist in enumerate(hists):
        history = {d: [split.domains[d].item_ids[i] for i in items] for d, items in hist.items()}
        if user_type == "inductive":
            own = inputs[dst][inputs[dst][:, 0] == users[k], 1]
            history[dst] = [split.domains[dst].item_ids[i] for i in own]
        got = engine.embed_user(dst, history)
        assert got.method == user_type
        scores = cat.vectors @ got.vector
        if got.boost is not None:
            boosted += 1
            lengths.append(len(got.boost.item_ids))
            rows = [cat.item_ids.index(i) for i in got.boost.item_ids]
            assert float(got.boost.scores.max()) == pytest.approx(0.7)  # the best item: w x 1
            scores[rows] += got.boost.scores
        np.testing.assert_allclose(scores, want[k], rtol=1e-4, atol=1e-5)
    assert boosted >= 3  # the comparison covers the boost
    uncut = replace(scorer.copurchase, max_items=0)  # type: ignore[attr-defined]
    longest = np.diff(uncut.boosts(dst, hists, split.domains[dst].n_items).indptr).max()
    assert max(lengths) == 3 < longest  # ... and the cut: longer boosts were cut to 3


def test_a_bundle_missing_the_transitions_file_is_refused(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, ds, split, feats, model = trained
    blend, _ = fit_blend(model, split, feats, BlendConfig(trials=3, content_dim=0, copurchase=True))
    out = write_tiny_bundle(tmp_path / "b", cfg, ds, split, feats, model, blend=blend)
    (out / "copurchase.safetensors").unlink()
    with pytest.raises(BundleError):
        load_bundle(out)


def test_a_bundle_with_the_old_low_rank_block_is_refused_in_one_line(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Bundles written with the removed low-rank block (``copurchase_rank``) say so."""
    cfg, ds, split, feats, model = trained
    blend, _ = fit_blend(model, split, feats, BlendConfig(trials=3, content_dim=0, copurchase=True))
    out = write_tiny_bundle(tmp_path / "b", cfg, ds, split, feats, model, blend=blend)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["blend"]["copurchase"] = {"rank": 4, "domains": [], "pairs": []}
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="low-rank co-purchase block no longer served"):
        load_bundle(out)
