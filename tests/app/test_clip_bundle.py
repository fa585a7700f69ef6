"""A bundle trained on open_clip features, served end to end (``make test-clip``).

The tiny random-init open_clip model of tests/model/encoders/test_clip_encoder.py is saved
to a local weights file; a synthetic catalogue with pictures is encoded with it (text and
image, one joint space), a small bundle is trained on those features, and the production
app serves it with ``MICREC_CLIP_WEIGHTS`` pointing at that file: registrations (text
only, image only, text + image) go through the encoder process, and the registered items
are recommended (to a query made of their own content, and in a history). Without the
weights the app serves with the encoders named unavailable; with other weights (or a
missing file) ``micrec serve`` refuses to start in one line.

Skipped where open_clip is not importable (the main venv), failed instead under
``MICREC_REQUIRE_CLIP=1`` (``make test-clip``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from model.data.loading import load_dataset
from model.data.synth import SynthConfig, write_synthetic_catalogue
from model.encoders.records import weights_sha256
from model.pipeline import train_run
from model.runconfig import load_run_config
from tests.app.real_bundle import AUTH, real_settings, running_real, service_of
from tests.model.encoders.test_clip_encoder import TINY_CFG, _open_clip

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ClipBundle:
    root: Path
    bundle: Path
    weights: Path
    data: Path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> ClipBundle:
    open_clip = _open_clip()
    from model.encoders.clip import _register_json_config

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clip-bundle")
    cfg_path = root / "tiny-clip.json"
    cfg_path.write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3}}))
    registry_name, _ = _register_json_config(cfg_path)
    torch.manual_seed(0)
    weights = root / "tiny-clip.pt"
    torch.save(open_clip.create_model(registry_name).state_dict(), weights)
    data = root / "data"
    write_synthetic_catalogue(data, SynthConfig.tiny(images=True, users=300))
    clip_features = {"clip_model": str(cfg_path), "clip_weights": str(weights)}
    cfg = load_run_config(
        None,
        {
            "features": {
                "text": "openclip",
                "image": "openclip",
                "cache_dir": str(root / "cache"),
                **clip_features,
            },
            "train": {"epochs": 10, "patience": 100, "batch_size": 512, "lr": 0.005},
            "tune": {"trials": 0},
        },
    )
    dataset = load_dataset(data, min_rating=cfg.data.min_rating)
    out = train_run(data, cfg, root / "bundle", progress=False, run_test=False, dataset=dataset)
    return ClipBundle(root, out.bundle_dir, weights, data)


def pin_query_weights(bundle: Path, out: Path) -> Path:
    """A copy of ``bundle`` whose query weights are content only: on a random-init CLIP the
    validation fit may rightly prefer the prior, and then which items a query returns
    says nothing about the encoders (the manifest is not among the checksummed files)."""
    import shutil

    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    only = {"model": 0.0, "prior": 0.0, "content": 1.0}
    manifest["blend"]["query"] = {d: only for d in manifest["domains"]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def picture(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(48, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_the_bundle_records_how_to_rebuild_its_encoders(clip: ClipBundle) -> None:
    manifest = json.loads((clip.bundle / "manifest.json").read_text())
    sha = weights_sha256(clip.weights)
    for modality in ("text", "image"):
        record = manifest["encoders"][modality]
        assert record["backend"] == "openclip" and record["dim"] == 16
        assert record["weights_sha256"] == sha
        assert record["model_config"]["model_cfg"] == TINY_CFG  # the JSON config, inline
        assert record["preprocess"]["mean"] == [0.5] * 3
        assert str(clip.root) not in json.dumps(record)  # no local path: a checksum
    assert set(manifest["blend"]["query"]) == set(manifest["domains"])  # fitted weights


@pytest.fixture(scope="module")
def served(clip: ClipBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    state = tmp_path_factory.mktemp("clip-state")
    bundle = pin_query_weights(clip.bundle, state / "bundle")
    settings = real_settings(bundle, state, clip_weights=clip.weights)
    with running_real(settings) as client:
        yield client


def top(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    r = client.post("/v1/recommend", json={"n": 10, **body})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_registration_and_queries_with_an_open_clip_bundle(served: TestClient) -> None:
    info = served.get("/v1/model", headers=AUTH).json()
    assert info["query_modalities"] == ["image", "text"]
    assert served.get("/readyz").json()["encoders_unavailable"] == {}
    domain = info["domains"][0]
    items = {
        "clip-text": ({"title": "zebra striped teapot of doom"}, ["text"]),
        "clip-image": ({"image_base64": b64(picture(1))}, ["image"]),
        "clip-both": (
            {"title": "glow in the dark stapler", "image_base64": b64(picture(2))},
            ["image", "text"],
        ),
    }
    for item_id, (content, modalities) in items.items():
        body = {"item_id": item_id, "domain": domain, **content}
        r = served.post("/v1/items", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json()["modalities"] == modalities
    # each registered item is recommended to a visitor who typed / showed its content
    queries = {
        "clip-text": {"text": "zebra striped teapot of doom"},
        "clip-image": {"image_base64": b64(picture(1))},
        "clip-both": {"text": "glow in the dark stapler", "image_base64": b64(picture(2))},
    }
    for item_id, query in queries.items():
        got = top(served, domain=domain, query=query)
        assert {it["source"] for it in got} == {"query"}
        assert item_id in [it["item_id"] for it in got], (item_id, got)
    # and a registered item is usable as history: the model recommends from it
    got = top(served, domain=domain, history=["clip-both"])
    assert got and {it["source"] for it in got} == {"model"}
    assert service_of(served).items.get("clip-image").modalities == ["image"]


def test_without_weights_it_serves_and_names_the_encoders(
    clip: ClipBundle, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = real_settings(clip.bundle, tmp_path_factory.mktemp("no-weights"))
    with running_real(settings) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded"
        assert set(ready["encoders_unavailable"]) == {"text", "image"}
        assert "MICREC_CLIP_WEIGHTS" in ready["encoders_unavailable"]["text"]
        domain = ready["domains"][0]
        state = service_of(client).state
        assert state is not None
        history = list(state.engine.catalogue(domain).item_ids[:2])
        assert top(client, domain=domain, history=history)  # recommendations serve
        r = client.post(
            "/v1/items", json={"item_id": "x", "domain": domain, "title": "t"}, headers=AUTH
        )
        assert r.status_code == 503 and "MICREC_CLIP_WEIGHTS" in r.json()["detail"]
        r = client.post("/v1/recommend", json={"domain": domain, "query": {"text": "t"}})
        assert r.status_code == 503 and "MICREC_CLIP_WEIGHTS" in r.json()["detail"]


@pytest.mark.parametrize("weights", ["missing", "other"])
def test_serve_refuses_wrong_or_missing_weights_in_one_line(clip: ClipBundle, weights: str) -> None:
    path = clip.root / "missing.pt"
    if weights == "other":
        path = clip.root / "other.pt"
        path.write_bytes(clip.weights.read_bytes() + b"another checkpoint")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICREC_")}
    env["MICREC_CLIP_WEIGHTS"] = str(path)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--bundle", str(clip.bundle), "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a refusal comes before any worker starts
    )
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert "MICREC_CLIP_WEIGHTS" in lines[0]
    assert ("no such file" if weights == "missing" else "sha256") in lines[0]
