"""Shapes, gradients and each loss/normalisation on hand-checkable cases."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.nn.config import ABLATIONS, MICRecConfig
from model.nn.graph import normalized_adjacency, select_templates, template_incidence
from model.nn.micrec import DomainInputs, MICRec
from model.nn.modules import ModalityAggregator, bpr_loss, symmetric_info_nce
from model.training import domain_features
from tests.model.toy import toy_split


def test_bpr_loss_hand_case() -> None:
    pos, neg = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_hand_case() -> None:
    # two users, orthogonal unit vectors, perfectly aligned across domains
    q = torch.eye(2)
    tau = 0.5
    # each row: logits [1/tau, 0] -> loss = -log(e^2 / (e^2 + 1))
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert symmetric_info_nce(q, q, tau).item() == pytest.approx(expected, rel=1e-6)
    # swapped pairs are maximally wrong: -log(1 / (e^2 + 1))
    assert symmetric_info_nce(q, q.flip(0), tau).item() == pytest.approx(
        math.log(math.exp(2) + 1), rel=1e-6
    )


def test_template_selection_ranks_by_inverse_degree() -> None:
    # item 0 is popular (3 users), items 1, 2 have one user each
    pairs = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 2]])
    full = select_templates(4, 4, pairs, 1.0)
    assert (full.user_rows >= 0).tolist() == [True, True, True, False]  # user 3 has no items
    assert (full.item_rows >= 0).tolist() == [True, True, True, False]
    half = select_templates(4, 4, pairs, 0.34)
    # score(u0) = 1/3 + 1 = 1.33, score(u1) = 1/3 + 1 = 1.33, score(u2) = 1/3 -> keep u0
    assert np.flatnonzero(half.user_rows >= 0).tolist() == [0]
    assert full.n_rows == 3 + 3 + 2 and full.item_token == full.n_rows - 1


def test_incidence_counts_and_drop_scaling() -> None:
    pairs = np.array([[0, 0], [0, 1], [1, 1]])
    tmap = select_templates(2, 2, pairs, 1.0)
    inc = template_incidence(tmap, 2, 2, pairs)
    # c_x = template neighbours + 1 (token): user0 -> 3, user1 -> 2, item0 -> 2, item1 -> 3
    assert inc.counts.tolist() == [3.0, 2.0, 2.0, 3.0]
    dense = inc.matrix().to_dense()
    assert dense[0, tmap.user_token] == 1 and dense[2, tmap.item_token] == 1
    torch.manual_seed(0)
    big = template_incidence(tmap, 2, 2, np.repeat(pairs, 1, axis=0))
    g = torch.Generator().manual_seed(0)
    dropped = big.matrix(drop=0.5, generator=g).to_dense()
    vals = dropped[dropped != 0]
    assert torch.allclose(vals, torch.full_like(vals, 2.0))  # survivors scaled by 1/(1-p)


def test_normalized_adjacency_values() -> None:
    pairs = np.array([[0, 0], [0, 1], [1, 1]])
    a = normalized_adjacency(2, 2, pairs).to_dense()
    # deg: u0=2, u1=1, i0=1, i1=2; entry (u0, i1) = 1/sqrt(2*2)
    assert a[0, 3].item() == pytest.approx(0.5)
    assert a[1, 3].item() == pytest.approx(1 / math.sqrt(2))
    assert torch.allclose(a, a.T)


def test_modality_aggregator_masks_missing() -> None:
    agg = ModalityAggregator({"text": 3, "image": 2}, 4)
    feats = {"text": torch.randn(2, 3), "image": torch.randn(2, 2)}
    masks = {"text": torch.tensor([True, True]), "image": torch.tensor([True, False])}
    h = agg(feats, masks)
    assert h.shape == (2, 4)
    # item 1 has no image: its h is exactly the text projection
    assert torch.allclose(h[1], agg.proj["text"](feats["text"][1]), atol=1e-6)
    none = agg(feats, {"text": torch.tensor([False, False]), "image": torch.tensor([False, False])})
    assert torch.count_nonzero(none) == 0


def _model(config: MICRecConfig) -> tuple[MICRec, dict[str, DomainInputs]]:
    split, feats = toy_split()
    templates, inputs, dims = {}, {}, {}
    for d, ds in split.domains.items():
        tr = ds.train_old()
        templates[d] = select_templates(ds.n_users, ds.n_items, tr)
        f, m = domain_features(feats, ds.item_ids, config.modalities)
        dims.update({k: v.shape[1] for k, v in f.items()})
        inputs[d] = DomainInputs.build(templates[d], ds.n_users, ds.n_items, tr, f, m)
    return MICRec(config, templates, dims), inputs


def test_forward_shapes_and_gradients() -> None:
    model, inputs = _model(MICRecConfig(dim=8))
    zu, zi, layers = model("a", inputs["a"], drop=0.1)
    assert zu.shape == (200, 8) and zi.shape == (80, 8) and len(layers) == 4
    loss = (zu[:5] @ zi[:5].T).sum() + model.head(zu[:4]).sum()  # type: ignore[misc]
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(("tables.d_b", "se_w")):
            continue  # domain b and w are not in this loss
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.gamma.grad is not None and model.gamma.grad.abs() > 0


def test_parameter_count_independent_of_catalogue_size() -> None:
    model, _ = _model(MICRecConfig(dim=8, modalities=()))
    n_rows = sum(t.n_rows for t in model.templates.values())
    n_params = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())  # type: ignore[union-attr]
    assert n_params == n_rows * 8 + 2 * 8 + 1 + head  # tables + w per domain + gamma + head


def test_every_ablation_is_a_flag_of_the_same_model() -> None:
    for name in ABLATIONS:
        model, inputs = _model(MICRecConfig(dim=8).ablate(name))
        zu, zi, _ = model("b", inputs["b"])
        assert torch.isfinite(zu).all() and torch.isfinite(zi).all()
    inmo, _ = _model(MICRecConfig(dim=8).ablate("inmo"))
    assert inmo.content is None and inmo.head is None


def test_content_weight_variants_on_layer0() -> None:
    """item_content_weight="degree" weighs h_i by (|N(i)| + 1)^(alpha/2 - 1), like one more
    neighbour; user_content=False drops gamma * p_u; both leave everything else alone."""
    base, inputs = _model(MICRecConfig(dim=8, gamma_init=1.0))
    inp = inputs["a"]
    with torch.no_grad():
        base.alpha.fill_(0.5)
        e_const = base.layer0("a", inp)
        h = base.item_content(inp)
        assert h is not None
        for cfg, check in (
            (replace(base.config, item_content_weight="degree"), "items"),
            (replace(base.config, user_content=False), "users"),
        ):
            other, _ = _model(cfg)
            other.load_state_dict(base.state_dict())
            diff = other.layer0("a", inp) - e_const
            users, items = diff[: inp.n_users], diff[inp.n_users :]
            if check == "items":
                k = torch.as_tensor(np.bincount(inp.pairs[:, 1], minlength=inp.n_items))
                expected = ((k + 1.0) ** (0.5 / 2 - 1) - 1).unsqueeze(1) * h
                assert torch.allclose(items, expected, atol=1e-5)
                assert torch.count_nonzero(users) == 0
            else:
                p = torch.sparse.mm(inp.interactions, h) * base.scale(
                    inp.user_degree + 1
                ).unsqueeze(1)
                assert torch.allclose(users, -p, atol=1e-5)
                assert torch.count_nonzero(items) == 0
    with pytest.raises(ValueError, match="item_content_weight"):
        MICRecConfig(item_content_weight="log")
