"""The score blend's part of a bundle (model.bundle): what the manifest's ``blend`` record
holds and the files beside it.

    blend.safetensors          the content reducer (model.nn.blend.ContentReducer), if any
    copurchase.safetensors     the cross-domain co-purchase transitions (CSR,
                               model.nn.copurchase), if any

The record: fitted weights per domain and user type, query-start weights, item terms,
the other-domain profile weights, the reducer's layout and the co-purchase meta. Every
value read back is checked; a bad one raises ``ValueError`` with one line (model.bundle
names the bundle in front of it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from model.nn.blend import ITEM_TERMS, Blend, BlendWeights, ContentReducer
from model.nn.copurchase import CoPurchase


def write_blend(folder: Path, blend: Blend) -> tuple[dict[str, Any], list[str]]:
    """Write ``blend``'s files into ``folder``; returns the manifest record and the names
    of the files written (to be hashed with the bundle's others)."""
    meta: dict[str, Any] = {"weights": blend.weights_json(), "reducer": None}
    files: list[str] = []
    if blend.query:
        meta["query"] = {d: w.to_dict() for d, w in blend.query.items()}
    if blend.item_terms:
        meta["item_terms"] = {d: dict(t) for d, t in blend.item_terms.items()}
    if blend.profile_other:
        meta["profile_other"] = dict(blend.profile_other)
    if blend.reducer is not None:
        r = blend.reducer
        tensors = {k: v.contiguous() for k, v in r.tensors().items()}
        save_file(tensors, str(folder / "blend.safetensors"))
        meta["reducer"] = {"modalities": list(r.modalities), "dims": list(r.dims)}
        files.append("blend.safetensors")
    if blend.copurchase is not None:
        cp = blend.copurchase
        tensors = {k: v.contiguous() for k, v in cp.tensors().items()}
        save_file(tensors, str(folder / "copurchase.safetensors"))
        meta["copurchase"] = cp.meta()
        files.append("copurchase.safetensors")
    return meta, files


def read_blend(folder: Path, meta: dict[str, Any] | None) -> Blend | None:
    """The blend recorded in a manifest (None for bundles without one); its files are
    read from ``folder`` (already verified against the manifest's hashes)."""
    if meta is None:
        return None
    reducer = None
    if meta.get("reducer"):
        t = load_file(str(folder / "blend.safetensors"))
        reducer = ContentReducer(
            modalities=tuple(meta["reducer"]["modalities"]),
            dims=tuple(int(x) for x in meta["reducer"]["dims"]),
            mean=t["reducer_mean"],
            basis=t["reducer_basis"],
        )
    query = {
        d: BlendWeights(**{k: float(v) for k, v in w.items()})
        for d, w in (meta.get("query") or {}).items()
    }
    raw = meta.get("item_terms") or {}
    terms = {d: {t: float(v) for t, v in ts.items()} for d, ts in raw.items()}
    unknown = sorted({t for ts in terms.values() for t in ts} - set(ITEM_TERMS))
    if unknown:  # a newer version's term: serving without it would rank differently
        raise ValueError(f"unknown blend item terms {unknown}; known: {sorted(ITEM_TERMS)}")
    other = {d: float(v) for d, v in (meta.get("profile_other") or {}).items()}
    if not all(math.isfinite(v) and v >= 0 for v in other.values()):
        raise ValueError(f"blend profile_other must be finite and >= 0, got {other}")
    copurchase = None
    if meta.get("copurchase"):
        if "rank" in meta["copurchase"]:  # the low-rank block of an earlier version (off)
            raise ValueError("low-rank co-purchase block no longer served; retrain")
        try:
            copurchase = CoPurchase.from_state(
                meta["copurchase"], load_file(str(folder / "copurchase.safetensors"))
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"copurchase.safetensors is not valid: {err}") from None
    weights = Blend.weights_from_json(meta["weights"])
    return Blend(reducer, weights, query, terms, copurchase, other)
