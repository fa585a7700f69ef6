"""The engine's per-item arrays in the serving cache (model/serving_cache.py): serving
vectors, the embedders' template rows and template flags, and the catalogue columns.

Built once per machine a chunk of items at a time (``CHUNK`` rows: the temporaries of one
chunk, not of a whole domain: at 1e7 items a domain's float32 serving vectors alone are
7.7 GB), then memory-mapped read-only by every worker. A worker that starts on a warm
cache therefore creates no per-item array of its own for these: it loads the bundle with
``templates=False`` and ``catalogue=False`` (model/bundle.py) and maps the rest.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.bundle import Bundle, item_templates, read_catalogue
from model.columns import CatalogueColumns
from model.serving_cache import CacheError, cache_key, load_array, open_cached

log = logging.getLogger("micrec.inference")

CHUNK = 1 << 20
"""Items per step of the build. Up to this many items per domain the build computes
exactly what the in-memory engine does in one step (bitwise the same vectors)."""

ServingItems = Callable[[str, torch.Tensor, slice | None], np.ndarray]
"""(domain, model item vectors z of ``rows``, rows) -> the serving vectors of those rows."""


def catalogue_of(bundle: Bundle) -> dict[str, dict[str, Any]]:
    """The bundle's catalogue lists per domain: the loaded ones, or catalogue.json read now
    (a bundle loaded with ``catalogue=False``; they are dropped once the columns exist)."""
    if not bundle.catalogue_loaded:
        return read_catalogue(bundle.path)
    return {
        d: {
            "user_ids": s.user_ids,
            "item_ids": s.item_ids,
            "titles": s.titles,
            "categories": s.categories,
            "popularity": s.popularity,
        }
        for d, s in bundle.domains.items()
    }


def derive_templates(bundle: Bundle) -> None:
    """Compute the embedders' template rows in memory (a bundle loaded with
    ``templates=False`` that gets no serving cache)."""
    if bundle.templates_loaded:
        return
    for d, s in bundle.domains.items():
        tpl, flags = item_templates(bundle.model, d)
        s.embedder.item_template = torch.from_numpy(tpl)
        s.embedder.is_template = torch.from_numpy(flags)
    bundle.templates_loaded = True


def _open_npy(path: Path, dtype: str, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` file of ``shape`` mapped for writing (the header np.save writes)."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)


def _build_domain(
    bundle: Bundle, d: str, stem: str, tmp: Path, dtype: str, dim: int, serving: ServingItems
) -> None:
    emb = bundle.domains[d].embedder
    n = emb.n_items
    vectors = _open_npy(tmp / f"vectors-{stem}.npy", dtype, (n, dim))
    for lo in range(0, n, CHUNK):
        rows = slice(lo, min(n, lo + CHUNK))
        vectors[rows] = serving(d, emb.item_vectors(rows=rows), rows).astype(dtype)
    vectors.flush()
    del vectors
    tpl = _open_npy(tmp / f"template-{stem}.npy", "float32", (n, emb.dim))
    flags = _open_npy(tmp / f"is-template-{stem}.npy", "float32", (n,))
    if bundle.templates_loaded:
        for lo in range(0, n, CHUNK):
            rows = slice(lo, min(n, lo + CHUNK))
            tpl[rows] = emb.item_template[rows].cpu().numpy()
            flags[rows] = emb.is_template[rows].cpu().numpy()
    else:
        item_templates(bundle.model, d, tpl, flags)
    tpl.flush()
    flags.flush()


def cached_arrays(
    bundle: Bundle, cache_dir: Path, dtype: str, dim: int, serving: ServingItems
) -> tuple[dict[str, np.ndarray], CatalogueColumns] | None:
    """Serving vectors ([n, dim] of ``dtype``) per domain and the catalogue columns from
    the memory-mapped cache (built on a miss with ``serving``); the embedders' template
    rows and flags are switched to the cached copies too. None when the cache cannot be
    written (the caller then computes in memory, as without one)."""
    files = {d: Path(bundle.manifest["domain_files"][d]).stem for d in bundle.domains}

    def build(tmp: Path) -> None:
        for d, stem in files.items():
            _build_domain(bundle, d, stem, tmp, dtype, dim, serving)
        CatalogueColumns.from_catalogue(list(bundle.domains), catalogue_of(bundle)).save(tmp, files)

    key = cache_key(bundle.path / "manifest.json", {"engine": 3, "dtype": dtype})
    try:
        directory = open_cached(cache_dir, key, build)
    except CacheError as err:
        log.warning("%s; serving vectors are computed in memory", err)
        return None
    out = {}
    for d, stem in files.items():
        out[d] = load_array(directory, f"vectors-{stem}")
        emb = bundle.domains[d].embedder
        with warnings.catch_warnings():  # read-only by design: nothing writes to it
            warnings.simplefilter("ignore", UserWarning)
            emb.item_template = torch.from_numpy(load_array(directory, f"template-{stem}"))
            emb.is_template = torch.from_numpy(load_array(directory, f"is-template-{stem}"))
    bundle.templates_loaded = True
    return out, CatalogueColumns.load(directory, files)
