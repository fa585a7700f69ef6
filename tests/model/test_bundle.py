"""Bundle round trip, tamper/missing/version refusal, and the inference engine on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.bundle import FORMAT_VERSION, BundleError, load_bundle, save_bundle
from model.inference import InferenceEngine
from model.nn.config import MICRecConfig, TrainConfig
from model.nn.foldin import build_embedder
from model.nn.micrec import DomainInputs
from model.training import Trainer, domain_features
from tests.model.toy import toy_split


def make_toy_bundle(path: Path) -> tuple[Path, object, object]:
    split, feats = toy_split()
    tr = Trainer(split, feats, MICRecConfig(dim=16), TrainConfig(batch_size=256))
    for _ in range(10):
        tr.step()
    model = tr.model
    embedders, catalogue, histories = {}, {}, {}
    for d, ds in split.domains.items():
        f, m = domain_features(feats, ds.item_ids, tuple(model.modalities))
        inp = DomainInputs.build(model.templates[d], ds.n_users, ds.n_items, ds.train, f, m)
        embedders[d] = build_embedder(model, d, inp)
        catalogue[d] = {
            "user_ids": ds.user_ids,
            "item_ids": ds.item_ids,
            "titles": [f"title {i}" for i in ds.item_ids],
            "categories": ["Cat > Sub"] * ds.n_items,
            "popularity": np.bincount(ds.train[:, 1], minlength=ds.n_items),
        }
        histories[d] = ds.train
    enc = {"text": {"name": "toy-text", "dim": 16}, "image": {"name": "toy-image", "dim": 8}}
    save_bundle(
        path,
        model=model,
        embedders=embedders,
        catalogue=catalogue,
        histories=histories,
        encoders=enc,
        data={"name": "toy"},
        metrics={"best_epoch": 0},
    )
    return path, model, embedders


def test_round_trip_reproduces_item_vectors_and_weights(tmp_path: Path) -> None:
    path, model, embedders = make_toy_bundle(tmp_path / "b")
    b = load_bundle(path)
    for k, v in model.state_dict().items():  # type: ignore[attr-defined]
        assert torch.equal(v, b.model.state_dict()[k]), k
    for d, e in embedders.items():  # type: ignore[attr-defined]
        assert torch.equal(b.domains[d].embedder.item_vectors(), e.item_vectors())
    assert b.manifest["format_version"] == FORMAT_VERSION
    assert set(b.manifest["sha256"]) == {
        "weights.safetensors",
        "catalogue.json",
        "domain-0.safetensors",
        "domain-1.safetensors",
    }


def test_engine_embeds_known_new_cross_domain_and_empty_users(tmp_path: Path) -> None:
    path, _, embedders = make_toy_bundle(tmp_path / "b")
    eng = InferenceEngine.from_bundle(load_bundle(path))
    hist = eng.bundle_history("u3")
    assert set(hist) == {"a", "b"}
    known = eng.embed_user("a", hist)
    assert known.method == "inductive" and known.vector.shape == (16,)
    # the bundle user's fold-in equals the evaluation path's vector for that user
    ref = embedders["a"].embed_users(
        [np.array([eng.catalogue("a").item_ids.index(i) for i in hist["a"]])]
    )[0]  # type: ignore[index]
    assert np.allclose(known.vector, ref.numpy(), atol=1e-6)
    cross = eng.embed_user("a", {"b": hist["b"]})
    assert cross.method == "cross_domain"
    assert eng.embed_user("a", {}).method == "none"
    assert eng.embed_user("a", {"x": ["not-an-item"]}).method == "none"
    with pytest.raises(KeyError, match="unknown domain"):
        eng.embed_user("nope", {})


def test_sample_user_vectors_are_the_users_own_in_domain_embeddings(tmp_path: Path) -> None:
    path, _, _ = make_toy_bundle(tmp_path / "b")
    eng = InferenceEngine.from_bundle(load_bundle(path))
    s = eng.bundle.domains["a"]
    with_history = [u for u in s.user_ids if eng.bundle_history(u).get("a")]
    got = eng.sample_user_vectors("a", 5)
    assert got.shape == (5, 16) and got.dtype == np.float32
    # Spread over the user list: the first and the last user with history are included.
    first = eng.embed_user("a", {"a": eng.bundle_history(with_history[0])["a"]}).vector
    last = eng.embed_user("a", {"a": eng.bundle_history(with_history[-1])["a"]}).vector
    assert np.allclose(got[0], first, atol=1e-5) and np.allclose(got[-1], last, atol=1e-5)
    assert eng.sample_user_vectors("a", 10**6).shape == (len(with_history), 16)
    assert eng.sample_user_vectors("a", 0).shape == (0, 16)


def test_engine_add_item_is_used_in_histories(tmp_path: Path) -> None:
    path, _, _ = make_toy_bundle(tmp_path / "b")
    eng = InferenceEngine.from_bundle(load_bundle(path))
    content = {"text": np.eye(16, dtype=np.float32)[2]}
    vec = eng.add_item("new-1", "a", content)
    assert vec.shape == (16,) and np.isfinite(vec).all()
    assert eng.item_domain("new-1") == "a"
    only_new = eng.embed_user("a", {"a": ["new-1"]})
    assert only_new.method == "inductive" and only_new.n_history == 1
    assert not np.allclose(only_new.vector, eng.embed_user("a", {}).vector)
    with pytest.raises(ValueError, match="dim"):
        eng.add_item("bad", "a", {"text": np.ones(5, dtype=np.float32)})
    eng.remove_item("new-1")
    assert eng.item_domain("new-1") is None


def test_tampered_truncated_missing_and_version_mismatch_are_refused(tmp_path: Path) -> None:
    path, _, _ = make_toy_bundle(tmp_path / "b")
    w = path / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.safetensors does not match"):
        load_bundle(path)

    path, _, _ = make_toy_bundle(tmp_path / "c")
    d0 = path / "domain-0.safetensors"
    d0.write_bytes(d0.read_bytes()[:100])
    with pytest.raises(BundleError, match="tampered or truncated"):
        load_bundle(path)

    path, _, _ = make_toy_bundle(tmp_path / "d")
    (path / "catalogue.json").unlink()
    with pytest.raises(BundleError, match=r"missing file catalogue\.json"):
        load_bundle(path)

    path, _, _ = make_toy_bundle(tmp_path / "e")
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = 999
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format version 999"):
        load_bundle(path)

    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path / "nowhere")


def test_manifest_listing_a_path_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    path, _, _ = make_toy_bundle(tmp_path / "b")
    m = json.loads((path / "manifest.json").read_text())
    m["sha256"]["../escape"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="missing file"):
        load_bundle(path)


def test_a_listed_file_linked_out_of_the_bundle_is_refused(tmp_path: Path) -> None:
    """A bundle must hold its own files: a weights file that is a symlink to a file outside
    (with the right sha256, so only the link is wrong) does not load; a link to a file
    inside the bundle still does."""
    path, _, _ = make_toy_bundle(tmp_path / "bundles" / "b")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (path / "weights.safetensors").rename(outside / "weights.safetensors")
    (path / "weights.safetensors").symlink_to(outside / "weights.safetensors")
    with pytest.raises(BundleError, match=r"weights\.safetensors is a link to a file outside"):
        load_bundle(path)

    (path / "weights.safetensors").unlink()
    (outside / "weights.safetensors").rename(path / "kept.bin")
    (path / "weights.safetensors").symlink_to("kept.bin")  # relative, inside: fine
    assert load_bundle(path).model_version


def test_a_manifest_linked_out_of_the_bundle_is_refused(tmp_path: Path) -> None:
    path, _, _ = make_toy_bundle(tmp_path / "b")
    (path / "manifest.json").rename(tmp_path / "manifest.json")
    (path / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(BundleError, match=r"manifest\.json is a link to a file outside"):
        load_bundle(path)


def test_an_encoder_built_with_other_weights_refuses_the_load_in_one_line(tmp_path: Path) -> None:
    """A bundle whose text encoder record names weights this machine does not have (the
    packaged MiniLM's sha256 differs) is refused when the engine is made, not served with
    vectors from another model (model.encoders.records)."""
    path, _, _ = make_toy_bundle(tmp_path / "b")
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["encoders"]["text"] = {
        "name": "minilm-l6-v2",
        "dim": 384,
        "backend": "minilm-l6-v2",
        "weights_sha256": "0" * 64,
    }
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="sha256 differs") as err:
        InferenceEngine.from_bundle(load_bundle(path))
    assert "\n" not in str(err.value)
    # the toy encoders exist nowhere: not a refusal, an encoder named unavailable
    del manifest["encoders"]["text"]
    mpath.write_text(json.dumps(manifest))
    engine = InferenceEngine.from_bundle(load_bundle(path))
    assert set(engine.encoders_unavailable) == {"image"}
