"""The serving benchmark's catalogues: a real trained bundle padded to N items per domain
with synthetic items near the real ones, written in the real bundle format and cached."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_common import PAD_SEED, log


def pad_bundle(
    src: Path, dst: Path, n_items: int, *, seed: int = PAD_SEED, blend: bool = True
) -> Path:
    """Write ``src`` with every domain padded to ``n_items`` items (real format).

    A synthetic item k mixes two random real items a, b of its domain (weight w ~ U(0, 0.3)
    on b) in every layer state and in the content vector, plus Gaussian noise of 0.1x the
    per-dimension spread; it keeps a's degree (so it is a graph item like a), is not a
    template, and gets a's title and categories and a small random popularity. Users and
    their histories are the real ones. The score blend's content vectors are mixed the
    same way (and re-normalised), so the padded bundle serves the blend like the real one;
    ``blend=False`` writes it without the blend (model score alone, the pre-blend vectors).
    """
    import torch
    import torch.nn.functional as F

    from model.bundle import load_bundle, save_bundle
    from model.nn.blend import DomainBlend
    from model.nn.foldin import DomainEmbedder
    from model.nn.graph import TemplateMap

    b = load_bundle(src)
    rng = np.random.default_rng(seed)
    model = b.model
    embedders: dict[str, DomainEmbedder] = {}
    catalogue: dict[str, dict[str, Any]] = {}
    histories: dict[str, np.ndarray] = {}
    blends: dict[str, DomainBlend] = {}

    def mixed(x: torch.Tensor, a: np.ndarray, bb: np.ndarray, w: torch.Tensor) -> torch.Tensor:
        std = x.std(dim=0, keepdim=True)
        noise = torch.from_numpy(rng.standard_normal((len(a), x.shape[1]), dtype=np.float32))
        return (1 - w) * x[a] + w * x[bb] + 0.1 * std * noise

    for d, s in b.domains.items():
        e = s.embedder
        n0 = e.n_items
        extra = max(0, n_items - n0)
        a = rng.integers(0, n0, extra)
        bb = rng.integers(0, n0, extra)
        w = torch.from_numpy(rng.uniform(0, 0.3, extra).astype(np.float32)).unsqueeze(1)
        item_layers = torch.cat(
            [
                e.item_layers,
                torch.stack([mixed(e.item_layers[k], a, bb, w) for k in range(e.n_layers + 1)]),
            ],
            dim=1,
        )
        content = None
        if e.item_content is not None:
            content = torch.cat([e.item_content, mixed(e.item_content, a, bb, w)])
        tm = model.templates[d]
        model.templates[d] = TemplateMap(
            tm.user_rows, np.concatenate([tm.item_rows, np.full(extra, -1, dtype=np.int64)])
        )
        embedders[d] = DomainEmbedder(
            domain=d,
            alpha=e.alpha,
            gamma=e.gamma,
            item_layers=item_layers,
            item_degree=torch.cat([e.item_degree, e.item_degree[a]]),
            item_template=e.item_template,  # derived at load time, not saved
            is_template=e.is_template,  # idem
            user_token=e.user_token,
            item_token=e.item_token,
            item_content=content,
            cold_scale=e.cold_scale,
        )
        catalogue[d] = {
            "user_ids": s.user_ids,
            "item_ids": list(s.item_ids) + [pad_id(d, k) for k in range(extra)],
            "titles": list(s.titles) + [s.titles[j] for j in a],
            "categories": list(s.categories) + [s.categories[j] for j in a],
            "popularity": np.concatenate([s.popularity, rng.poisson(1.0, extra)]),
        }
        if blend and b.blend is not None and s.blend is not None:
            c = s.blend.content
            if c is not None:
                c = torch.cat([c, F.normalize(mixed(c, a, bb, w), dim=1)])
            blends[d] = b.blend.for_domain(d, embedders[d].item_degree, content=c)
        users = np.repeat(np.arange(len(s.user_ids)), np.diff(s.history_ptr))
        histories[d] = np.stack([users, s.history_items], axis=1)
    m = b.manifest
    data = dict(m.get("data", {}))
    data["padded"] = {
        "from_bundle": str(src),
        "from_model_version": b.model_version,
        "items_per_domain": n_items,
        "seed": seed,
    }
    return save_bundle(
        dst,
        model=model,
        embedders=embedders,
        catalogue=catalogue,
        histories=histories,
        encoders=m.get("encoders", {}),
        data=data,
        metrics=m.get("metrics", {}),
        blends=blends or None,
        blend=b.blend if blend else None,
    )


def pad_id(domain: str, k: int) -> str:
    return f"{domain}-pad-{k:07d}"


def ensure_bundle(src: Path, work: Path, n_items: int, *, blend: bool = True) -> Path:
    """The padded bundle for ``n_items``, reused when it was made from the same model."""
    from model.bundle import read_manifest

    src_version = read_manifest(src)["model_version"]
    dst = work / (f"bundle-{n_items}" if blend else f"bundle-{n_items}-no-blend")
    if (dst / "manifest.json").is_file():
        padded = read_manifest(dst).get("data", {}).get("padded", {})
        if padded.get("from_model_version") == src_version and padded.get("seed") == PAD_SEED:
            log(f"reusing {dst}")
            return dst
    log(f"padding {src} to {n_items:,} items per domain -> {dst}")
    t = time.perf_counter()
    pad_bundle(src, dst, n_items, blend=blend)
    log(f"padded in {time.perf_counter() - t:.0f} s")
    return dst
