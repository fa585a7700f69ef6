"""The parts trained after the backbone: cross-domain maps (model.nn.bridge,
model.bridgefit), item maps (model.nn.itemmap, model.itemmapfit), and the validation they
are chosen on (pseudo-cold users, the test population)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.blendfit import fit_blend, fit_reducer
from model.bridgefit import _anchors, fit_bridges
from model.bundle import load_bundle
from model.evaluation import PSEUDO_COLD_SLICE, build_slices, evaluate, slice_inputs
from model.inference import InferenceEngine
from model.maps import fit_maps
from model.nn.blend import BlendWeights, profiles_of
from model.nn.bridge import Bridges, HistoryItems
from model.nn.config import BlendConfig, BridgeConfig, ItemMapConfig
from model.rankers import MICRecRanker, other_domain_histories
from model.runconfig import ConfigError, run_config_from_dict
from tests.model.tiny_trained import train_tiny, write_tiny_bundle


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("maps")
    cfg, ds, split, feats, model = train_tiny(root, users=400, epochs=10, model={"variant": "inmo"})
    maps = fit_maps(
        model,  # type: ignore[arg-type]
        split,
        feats,
        BridgeConfig(epochs=30),
        ItemMapConfig(epochs=15, batch_pairs=256),
    )
    return root, cfg, ds, split, feats, model, maps


def _bundle(trained, tmp_path):  # type: ignore[no-untyped-def]
    """The tiny trained model with its maps written as a bundle (text encoder recorded)."""
    _, cfg, ds, split, feats, model, maps = trained
    return write_tiny_bundle(tmp_path / "bundle", cfg, ds, split, feats, model, maps=maps)


def test_pseudo_cold_users_are_old_shared_users_never_used_as_anchors(trained) -> None:  # type: ignore[no-untyped-def]
    split = trained[3]
    for dst in split.domains:
        pseudo = split.pseudo_cold_users(dst)
        assert len(pseudo) > 0
        np.testing.assert_array_equal(pseudo, split.pseudo_cold_users(dst))  # seeded
        ds = split.domains[dst]
        assert (pseudo < ds.n_old_users).all()
        for src in split.domains:
            if src == dst:
                continue
            anchors, _ = _anchors(split, src, dst)
            assert len(anchors) > len(pseudo)
            assert not set(anchors.tolist()) & set(pseudo.tolist())


def test_validation_scores_only_the_test_population(trained) -> None:  # type: ignore[no-untyped-def]
    split = trained[3]
    d = sorted(split.domains)[0]
    ds = split.domains[d]
    tested = set(np.unique(ds.test[:, 0]).tolist())
    # a user with validation rows but no test rows (as sparse data makes them)
    lonely = int(ds.n_old_users - 1)
    ds.test = ds.test[ds.test[:, 0] != lonely]
    try:
        assert lonely in set(ds.val[:, 0].tolist())
        for sl in build_slices(split, d, stage="val"):
            assert lonely not in set(sl.users.tolist()), sl.name
            assert set(sl.users.tolist()) <= tested, sl.name
        assert any(
            sl.name == PSEUDO_COLD_SLICE and len(sl.users)
            for sl in build_slices(split, d, stage="val")
        )
    finally:
        ds.test = np.concatenate([ds.test, np.empty((0, 2), dtype=np.int64)])


def _pseudo_cold_ndcg(trained, bridges: Bridges) -> float:  # type: ignore[no-untyped-def]
    _, _, _, split, feats, model, _ = trained
    ranker = MICRecRanker("probe", model, split, feats, bridges=bridges, cross_domain_rule="bridge")
    res = evaluate(ranker, split, ks=(20,), only=(PSEUDO_COLD_SLICE,), stage="val")
    return float(np.mean([r[PSEUDO_COLD_SLICE]["ndcg@20"] for r in res.values()]))


def test_trained_bridge_ranks_pseudo_cold_users_better_than_an_untrained_one(trained) -> None:  # type: ignore[no-untyped-def]
    model, maps = trained[5], trained[6]
    assert maps.bridges is not None
    torch.manual_seed(0)
    untrained = Bridges(model.config.dim, maps.bridges.hidden, maps.bridges.pairs)
    assert _pseudo_cold_ndcg(trained, maps.bridges) > _pseudo_cold_ndcg(trained, untrained)
    for rec in maps.report["bridge"].values():
        assert rec["trained"] and rec["anchors"] > 0


@pytest.mark.parametrize("one_se", [False, True])
def test_blend_fit_chooses_the_cross_domain_rule_on_validation(trained, one_se: bool) -> None:  # type: ignore[no-untyped-def]
    _, _, _, split, feats, model, maps = trained
    given = model.config.cross_domain_rule
    try:
        cfg = BlendConfig(trials=6, rule_one_se=one_se)
        _, report = fit_blend(model, split, feats, cfg, bridges=maps.bridges)
        chosen = model.config.cross_domain_rule
        for d in split.domains:
            rec = report[d]["cross_domain"]
            scores = rec["rules_val_ndcg@20"]
            assert set(scores) == {given, "bridge"}
            assert rec["rule"] == chosen
            why = rec["rule_choice"]
            if why["by"] == "highest score":  # the leader is the map, or the rule is off
                assert scores[chosen] == max(scores.values()) or len(split.domains) > 2
            else:  # another rule led: it serves only if its gain is beyond one SE
                assert one_se and why["leader"] == given
                assert (chosen == given) == (why["paired_gain"] > why["se"])
    finally:
        model.config.cross_domain_rule = given


def test_cold_items_get_content_dependent_vectors_and_registration_matches_them(
    trained, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    _, _, _, split, feats, model, maps = trained
    assert maps.item_maps is not None
    d = sorted(split.domains)[0]
    out = _bundle(trained, tmp_path)
    bundle = load_bundle(out)
    assert bundle.bridges is not None and bundle.item_maps is not None
    # the cold-item slice: new items lose every interaction, as items registered later
    ranker = MICRecRanker("probe", model, split, feats, item_maps=maps.item_maps)
    scorer = ranker.bind(slice_inputs(split, d, "cold_items"))
    emb = scorer.md.embedders[d]  # type: ignore[attr-defined]
    assert emb.mapped_rows is not None
    ids = split.domains[d].item_ids
    has_text = feats.rows(ids).modalities["text"].mask
    new_items = np.arange(split.domains[d].n_old_items, split.domains[d].n_items)
    new_items = new_items[has_text[new_items]]
    assert len(new_items) > 1
    assert set(new_items.tolist()) <= set(emb.mapped_rows.tolist())
    z = emb.item_vectors()
    cold = z[torch.as_tensor(new_items)]
    # INMO alone gives every cold item the same vector; the map makes them differ
    assert float((cold - cold[0]).abs().sum(dim=1)[1:].min()) > 0
    # registration goes through the same map: same content, same model vector
    engine = InferenceEngine.from_bundle(bundle)
    row = int(new_items[0])
    item = split.domains[d].item_ids[row]
    text = np.asarray(feats.rows([item]).modalities["text"].vectors[0])
    vec = engine.add_item("registered-copy", d, {"text": text})
    np.testing.assert_allclose(vec[: model.config.dim], z[row].numpy(), rtol=1e-5, atol=1e-6)


def test_bridge_and_item_map_sections_refuse_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"\[bridge\] unknown keys \['hiden'\]"):
        run_config_from_dict({"bridge": {"hiden": 3}})
    with pytest.raises(ConfigError, match=r"\[item_map\]"):
        run_config_from_dict({"item_map": {"epochs": 0}})


def test_bridges_none_for_one_domain(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, _, split, feats, model, _ = trained
    assert fit_bridges(model, split, feats, BridgeConfig(enabled=False)) == (None, {})


def test_blend_fit_chooses_the_low_degree_mix_on_validation(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, _, split, feats, model, maps = trained
    assert maps.item_maps is not None
    try:
        _, report = fit_blend(
            model,
            split,
            feats,
            BlendConfig(trials=6),
            item_maps=maps.item_maps,
            low_degree_grid=(0.0, 1.0, 10.0),
        )
        for d in split.domains:
            rec = report[d]["inductive"]
            by_k = rec["objective_by_low_degree_k"]
            assert set(by_k) == {"0", "1", "10"}
            # a k > 0 only when its validation objective beats no mix; the best one then
            best = max(by_k, key=lambda k: by_k[k])
            want = float(best) if by_k[best] > by_k["0"] else 0.0
            assert rec["low_degree_k"] == want
            assert maps.item_maps.low_degree_k[d] == want
        # without a grid the fit does not mix, whatever an earlier fit chose
        _, report = fit_blend(model, split, feats, BlendConfig(trials=3), item_maps=maps.item_maps)
        assert all(v == 0.0 for v in maps.item_maps.low_degree_k.values())
    finally:
        maps.item_maps.low_degree_k.clear()


def test_low_degree_items_are_served_the_mix_the_bundle_records(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, _, _, split, _, model, maps = trained
    assert maps.item_maps is not None
    d = sorted(split.domains)[0]
    maps.item_maps.low_degree_k[d] = 3.0
    try:
        out = _bundle(trained, tmp_path)
    finally:
        maps.item_maps.low_degree_k.clear()
    bundle = load_bundle(out)
    assert bundle.item_maps is not None and bundle.item_maps.low_degree_k == {d: 3.0}
    emb = bundle.domains[d].embedder
    assert emb.low_rows is not None and emb.low_mapped is not None and len(emb.low_rows) > 0
    plain, served = emb.item_vectors(0.0), emb.item_vectors()
    deg = emb.item_degree
    low = emb.low_rows
    want = (deg[low].unsqueeze(1) * plain[low] + 3.0 * emb.low_mapped) / (
        3.0 + deg[low].unsqueeze(1)
    )
    torch.testing.assert_close(served[low], want)
    # every other row (cold items included) is what it was without the mix
    rest = torch.ones(len(deg), dtype=torch.bool)
    rest[low] = False
    torch.testing.assert_close(served[rest], plain[rest])
    assert not torch.allclose(served[low], plain[low])
    # the service's catalogue vectors are the mixed ones
    engine = InferenceEngine.from_bundle(bundle)
    vecs = np.asarray(engine.catalogue(d).vectors)[:, : model.config.dim]
    np.testing.assert_allclose(vecs, served.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "change",
    [{"content": True}, {"personal": 16}, {"ensemble": 3}],
    ids=["content", "personal", "ensemble"],
)
def test_bridges_reading_more_than_the_fold_in_are_served_as_evaluated(
    trained, tmp_path, change
) -> None:  # type: ignore[no-untyped-def]
    """``[bridge] content``: the maps read the user's content profile in the other domain
    (the blend's PCA); ``[bridge] personal``: each user's map adds their own matrix made
    from their items there (PTUPCDR). Either way the service maps a user new to a domain
    exactly as the offline evaluation does, from the same inputs."""
    _, cfg, ds, split, feats, model, _ = trained
    reducer = fit_reducer(split, feats, 16)
    assert reducer is not None
    maps = fit_maps(
        model,
        split,
        feats,
        BridgeConfig(epochs=8, **change),
        ItemMapConfig(enabled=False),
        reducer,
    )
    bridges = maps.bridges
    assert bridges is not None
    assert (bridges.content_dim, bridges.personal, bridges.ensemble) == (
        16 * ("content" in change),
        change.get("personal", 0),
        change.get("ensemble", 1),
    )
    if "personal" in change:  # trained on the shared map's best: never worse held back
        for rec in maps.report["bridge"].values():
            assert rec["held_back_loss"] <= rec["shared_held_back_loss"]
            assert rec["personal_epochs"] >= 1
    src, dst = sorted(split.domains)[:2]
    # the extra input changes the map's output
    z = torch.nn.functional.normalize(torch.randn(4, model.config.dim), dim=1)
    p = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    owner = torch.arange(4).repeat_interleave(3)
    h1 = HistoryItems(torch.randn(12, model.config.dim), owner, 4)
    h2 = HistoryItems(torch.randn(12, model.config.dim), owner, 4)
    if "ensemble" in change:  # members from other inits; the user gets their unit mean
        members = [torch.nn.functional.normalize(f(z), dim=1) for f in bridges.pair_maps(src, dst)]
        assert len(members) == 3 and not torch.allclose(members[0], members[1])
        torch.testing.assert_close(bridges.map(src, dst, z), torch.stack(members).mean(dim=0))
    else:
        assert not torch.allclose(
            bridges.map(src, dst, z, p, h1), bridges.map(src, dst, z, 0 * p, h2)
        )
    given = model.config.cross_domain_rule
    try:
        blend, _ = fit_blend(
            model, split, feats, BlendConfig(trials=3), bridges=bridges, reducer=reducer
        )
        assert blend.reducer is reducer
        blend.weights[dst]["cross_domain"] = BlendWeights(model=1.0, prior=0.5, content=0.5)
        model.config.cross_domain_rule = "bridge"
        out = write_tiny_bundle(
            tmp_path / "b", cfg, ds, split, feats, model, blend=blend, maps=maps
        )
    finally:
        model.config.cross_domain_rule = given
    bundle = load_bundle(out)
    assert bundle.bridges is not None
    assert bundle.bridges.meta() == bridges.meta()
    assert bundle.model.config.cross_domain_rule == "bridge"
    ranker = MICRecRanker(
        "probe", bundle.model, split, feats, blend=bundle.blend, bridges=bundle.bridges
    )
    scorer = ranker.bind(slice_inputs(split, dst, "standard"))
    users = split.pseudo_cold_users(dst)[:6]
    zu, types, prof, _ = scorer.parts(dst, users, cross_domain=True)  # type: ignore[attr-defined]
    assert set(types) == {"cross_domain"} and prof is not None
    want = scorer.blends[dst].users(zu, "cross_domain", prof).numpy()  # type: ignore[attr-defined]
    engine = InferenceEngine.from_bundle(bundle)
    inputs = slice_inputs(split, dst, "standard")
    hists = other_domain_histories(split, dst, users, inputs, ranker.maps)
    checked = 0
    for k, hist in enumerate(hists):
        history = {d: [split.domains[d].item_ids[i] for i in items] for d, items in hist.items()}
        got = engine.embed_user(dst, history)
        assert got.method == "cross_domain"
        np.testing.assert_allclose(got.vector, want[k], rtol=1e-4, atol=1e-5)
        # the model part is the map of the fold-in and the extra input from that domain
        (d, items), *more = hist.items()
        if not more:
            emb = scorer.md.embedders[d]  # type: ignore[attr-defined]
            mapped = bundle.bridges.map(
                d,
                dst,
                emb.embed_users([items]),
                profiles_of(scorer.blends[d].content, [items]),  # type: ignore[attr-defined]
                emb.history_items([items]),
            )
            torch.testing.assert_close(zu[k : k + 1], mapped)
            checked += 1
    assert checked


def test_a_personal_map_starts_as_the_shared_map() -> None:
    """The personal part is drawn from a forked generator and outputs 0 at the start, so a
    personal map's comparison with the shared map differs only by what it learns."""
    pairs = [("a", "b"), ("b", "a")]
    torch.manual_seed(0)
    plain = Bridges(8, 16, pairs)
    torch.manual_seed(0)
    personal = Bridges(8, 16, pairs, personal=4)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(personal.state_dict()[name], value)
    z = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    items = HistoryItems(torch.randn(5, 8), torch.tensor([0, 0, 1, 2, 2]), 3)
    torch.testing.assert_close(personal.map("a", "b", z, None, items), plain.map("a", "b", z))
