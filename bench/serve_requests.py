"""The serving benchmark's request bodies per request type (recommend: known, inductive,
cross-domain; registration: text, text + image) and the stored histories of known users."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
from serve_bundles import pad_id
from serve_common import HISTORY_LEN, RECOMMEND_TYPES, STORED_PER_USER


def make_image(rng: np.random.Generator, size: int = 512) -> bytes:
    """A 512x512 JPEG (a product-photo-sized upload): smooth colour field + texture."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c = rng.uniform(0, 255, (3, 3))
    img = np.stack([c[k, 0] * xx + c[k, 1] * yy + c[k, 2] * (1 - xx) for k in range(3)], -1)
    img = np.clip(img / 2 + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def build_requests(
    src: Path,
    n_items: int,
    *,
    seed: int = 0,
    count: int = 300,
    padded_domains: Collection[str] | None = None,
) -> dict[str, Any]:
    """Request bodies per type (JSON strings) + what the work floor needs to replay them.
    ``padded_domains``: the domains padded to ``n_items`` (None = all); inductive
    histories in the others draw from their real items."""
    from model.bundle import load_bundle

    b = load_bundle(src)
    rng = np.random.default_rng(seed)
    domains = sorted(b.domains)
    has: dict[str, set[str]] = {}
    for d, s in b.domains.items():
        counts = np.diff(s.history_ptr)
        has[d] = {u for u, c in zip(s.user_ids, counts.tolist(), strict=True) if c > 0}
    all_users = sorted(set().union(*has.values()))
    known: list[dict[str, Any]] = []
    cross: list[dict[str, Any]] = []
    for u in rng.permutation(all_users).tolist():
        in_doms = [d for d in domains if u in has[d]]
        out_doms = [d for d in domains if u not in has[d]]
        if len(known) < count:
            known.append({"user_id": u, "domain": str(rng.choice(in_doms))})
        if out_doms and len(cross) < count:
            cross.append({"user_id": u, "domain": str(rng.choice(out_doms))})
    inductive = []
    for k in range(count):
        d = domains[k % len(domains)]
        n0 = len(b.domains[d].item_ids)
        n = n_items if padded_domains is None or d in padded_domains else n0
        picks = rng.choice(n, HISTORY_LEN, replace=False)
        ids = [b.domains[d].item_ids[j] if j < n0 else pad_id(d, j - n0) for j in picks]
        inductive.append({"history": ids, "domain": d})
    # Stored history for known users: STORED_PER_USER items of their domain.
    stored: dict[str, list[dict[str, str]]] = {}
    for r in known:
        d = r["domain"]
        ids = b.domains[d].item_ids
        stored[r["user_id"]] = [
            {"user_id": r["user_id"], "item_id": ids[j], "domain": d}
            for j in rng.choice(len(ids), STORED_PER_USER, replace=False)
        ]
    images = [base64.b64encode(make_image(rng)).decode() for _ in range(8)]
    reg_text, reg_image = [], []
    for k in range(64):
        d = domains[k % len(domains)]
        s = b.domains[d]
        j = int(rng.integers(len(s.item_ids)))
        body = {
            "item_id": "__ID__",
            "domain": d,
            "title": f"{s.titles[j]} (new {k})",
            "categories": s.categories[j].split("|") if s.categories[j] else [],
            "description": f"A new product similar to {s.titles[j]}.",
        }
        reg_text.append(json.dumps(body))
        reg_image.append(json.dumps({**body, "image_base64": images[k % len(images)]}))
    return {
        "bodies": {
            "known": [json.dumps(r) for r in known],
            "inductive": [json.dumps(r) for r in inductive],
            "cross": [json.dumps(r) for r in cross],
            "reg_text": reg_text,
            "reg_image": reg_image,
        },
        "stored": stored,
        "image_bytes": [len(base64.b64decode(i)) for i in images],
    }


def requests_for_bundle(bundle: Path, source: Path) -> tuple[dict[str, Any], int]:
    """``build_requests`` for a padded bundle (its manifest says how many items per domain)
    made from the unpadded ``source``; also returns that item count."""
    padded = json.loads((bundle / "manifest.json").read_text())["data"]["padded"]
    n_items = int(padded["items_per_domain"])
    return build_requests(source, n_items), n_items


def recommend_mix(bodies: dict[str, list[str]]) -> list[str]:
    """The recommend mix: equal shares of the three user types, interleaved."""
    return [b for trio in zip(*(bodies[k] for k in RECOMMEND_TYPES), strict=False) for b in trio]
