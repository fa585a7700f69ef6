"""The serving benchmark's catalogues: a real trained bundle padded to N items per domain
with synthetic items near the real ones, written in the real bundle format and cached."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from serve_common import PAD_SEED, log

PAD_CHUNK = 1 << 18
"""Padded items generated and written per step (~0.5 GB of temporaries per step)."""


@contextmanager
def staged_dir(dst: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder beside ``dst`` to write a bundle into; when the block ends without
    an error it replaces ``dst`` (so a reader never sees a half-written bundle), and it is
    removed when the block fails."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dst.parent))
    try:
        yield tmp
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pad_bundle(
    src: Path,
    dst: Path,
    n_items: int,
    *,
    seed: int = PAD_SEED,
    blend: bool = True,
    domains: Collection[str] | None = None,
    chunk: int = PAD_CHUNK,
) -> Path:
    """Write ``src`` with its domains (``domains``; None = all) padded to ``n_items``
    items each, in the real bundle format, a chunk of ``chunk`` items at a time: no
    per-item tensor of the padded domain is ever held whole in memory, so a 1e7-item
    domain (~18 GB of files) is written in bounded memory.

    A synthetic item k mixes two random real items a, b of its domain (weight w ~ U(0, 0.3)
    on b) in every layer state and in the content vector, plus Gaussian noise of 0.1x the
    per-dimension spread of the real items; it keeps a's degree (so it is a graph item like
    a), is not a template, and gets a's title and categories and a small random popularity.
    Users and their histories are the real ones. The score blend's content vectors are
    mixed the same way (and re-normalised), so the padded bundle serves the blend like the
    real one; ``blend=False`` writes it without the blend (model score alone). Each tensor's
    noise comes from its own generator (spawned from ``seed`` per domain), drawn row by
    row, so the bundle is the same whatever ``chunk`` (the tests compare chunk sizes).
    Like the bundles padded before, it carries neither cross-domain bridges nor item maps;
    the co-purchase transitions are kept (padded items have none).
    """
    from model.bundle import FORMAT_VERSION, load_bundle, sha256_file

    b = load_bundle(src)
    m = b.manifest
    dst = Path(dst)
    with staged_dir(dst, ".bundle-") as tmp:
        shutil.copyfile(src / "weights.safetensors", tmp / "weights.safetensors")
        files = ["weights.safetensors", "catalogue.json"]
        with_blend = blend and b.blend is not None
        seeds = np.random.SeedSequence(seed).spawn(len(m["domains"]))
        extras: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, d in enumerate(m["domains"]):
            padded = domains is None or d in domains
            n = max(n_items, b.domains[d].embedder.n_items) if padded else 0
            name = m["domain_files"][d]
            extras[d] = _pad_domain(b, d, tmp / name, n, seeds[k], with_blend, chunk)
            files.append(name)
        _write_catalogue(b, tmp / "catalogue.json", extras, chunk)
        if with_blend and (m.get("blend") or {}).get("reducer"):
            shutil.copyfile(src / "blend.safetensors", tmp / "blend.safetensors")
            files.append("blend.safetensors")
        blend_meta = m.get("blend") if with_blend else None
        if blend_meta and blend_meta.get("copurchase") and b.blend and b.blend.copurchase:
            sizes = {d: max(n_items, b.domains[d].embedder.n_items) for d in m["domains"]}
            sizes = {
                d: n if domains is None or d in domains else b.domains[d].embedder.n_items
                for d, n in sizes.items()
            }
            blend_meta = {
                **blend_meta,
                "copurchase": _pad_copurchase(b.blend.copurchase, sizes, tmp),
            }
            files.append("copurchase.safetensors")
        sums = {f: sha256_file(tmp / f) for f in files}
        digest = hashlib.sha256("".join(sums[f] for f in files).encode()).hexdigest()
        data = dict(m.get("data", {}))
        data["padded"] = {
            "from_bundle": str(src),
            "from_model_version": b.model_version,
            "items_per_domain": n_items,
            "domains": sorted(domains) if domains is not None else list(m["domains"]),
            "seed": seed,
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_version": f"micrec-{time.strftime('%Y%m%d')}-{digest[:10]}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **{k: m[k] for k in ("model_config", "domains", "domain_files", "feature_dims")},
            "alpha": m["alpha"],
            "encoders": m.get("encoders", {}),
            "blend": blend_meta,
            "bridge": None,
            "item_map": None,
            "data": data,
            "metrics": m.get("metrics", {}),
            "sha256": sums,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=float))
    return dst


def _pad_copurchase(copurchase: Any, sizes: dict[str, int], out: Path) -> dict[str, Any]:
    """The co-purchase transitions with every domain at ``sizes`` items (padded items have
    no co-purchase: empty rows and columns), written to ``out``; returns their meta."""
    import scipy.sparse as sp
    from safetensors.torch import save_file

    from model.nn.copurchase import CoPurchase

    padded = CoPurchase(copurchase.top)
    for (a, b), t in copurchase.transitions.items():
        rows = np.concatenate([t.indptr, np.full(sizes[a] - t.shape[0], t.indptr[-1])])
        padded.transitions[(a, b)] = sp.csr_matrix(
            (t.data, t.indices, rows), shape=(sizes[a], sizes[b])
        )
    save_file(padded.tensors(), str(out / "copurchase.safetensors"))
    return padded.meta()


def _pad_domain(
    b: Any,
    d: str,
    path: Path,
    n: int,
    seq: np.random.SeedSequence,
    with_blend: bool,
    chunk: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Write domain ``d``'s tensor file padded to ``n`` items (0: unpadded); returns the
    source rows ``a`` of the padded items and their popularity (for the catalogue)."""
    from stream_safetensors import SafetensorsWriter

    s = b.domains[d]
    e = s.embedder
    n0 = e.n_items
    n = max(n, n0)
    extra = n - n0
    g_pick, g_layers, g_content, g_blend, g_pop = (np.random.default_rng(x) for x in seq.spawn(5))
    a = g_pick.integers(0, n0, extra)
    bb = g_pick.integers(0, n0, extra)
    w = g_pick.uniform(0, 0.3, extra).astype(np.float32)[:, None]
    popularity = g_pop.poisson(1.0, extra)
    layers = e.item_layers.numpy()
    content = None if e.item_content is None else e.item_content.numpy()
    bc = s.blend.content if with_blend and s.blend is not None else None
    blend_content = None if bc is None else bc.numpy()
    tmap = b.model.templates[d]
    specs: dict[str, tuple[Any, tuple[int, ...]]] = {
        "user_rows": ("int64", tmap.user_rows.shape),
        "item_rows": ("int64", (n,)),
        "item_layers": ("float32", (layers.shape[0], n, layers.shape[2])),
        "item_degree": ("float32", (n,)),
        "history_ptr": ("int64", s.history_ptr.shape),
        "history_items": ("int64", s.history_items.shape),
        "cold_scale": ("float32", (1,)),
    }
    if content is not None:
        specs["item_content"] = ("float32", (n, content.shape[1]))
    if blend_content is not None:
        specs["blend_content"] = ("float32", (n, blend_content.shape[1]))
    out = SafetensorsWriter(path, specs)
    out.write("user_rows", tmap.user_rows)
    out.write("history_ptr", s.history_ptr)
    out.write("history_items", s.history_items)
    out.write("cold_scale", np.array([e.cold_scale], dtype=np.float32))
    rows = np.full(n, -1, dtype=np.int64)
    rows[:n0] = tmap.item_rows
    out.write("item_rows", rows)
    degree = e.item_degree.numpy()
    out.write("item_degree", np.concatenate([degree, degree[a]]).astype(np.float32))

    def fill(name: str, real: np.ndarray, g: np.random.Generator, unit: bool = False) -> None:
        mapped = out.array(name)
        target: np.ndarray = mapped if mapped.ndim == 3 else mapped[None]
        real3 = real if real.ndim == 3 else real[None]
        for k in range(real3.shape[0]):  # layer by layer: each layer's noise a stream
            x = real3[k]
            std = x.std(axis=0, ddof=1, keepdims=True).astype(np.float32)
            target[k, :n0] = x
            for lo in range(0, extra, chunk):
                hi = min(extra, lo + chunk)
                noise = g.standard_normal((hi - lo, x.shape[1]), dtype=np.float32)
                v = (1 - w[lo:hi]) * x[a[lo:hi]] + w[lo:hi] * x[bb[lo:hi]] + 0.1 * std * noise
                if unit:
                    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
                target[k, n0 + lo : n0 + hi] = v
        mapped.flush()

    fill("item_layers", layers, g_layers)
    if content is not None:
        fill("item_content", content, g_content)
    if blend_content is not None:
        fill("blend_content", blend_content, g_blend, unit=True)
    return a, popularity


def _json_list(f: IO[str], chunks: Iterable[list[Any]]) -> None:
    """One JSON list written from consecutive ``chunks`` (never the whole list at once)."""
    f.write("[")
    first = True
    for part in chunks:
        text = json.dumps(part)[1:-1]
        if text:
            f.write(text if first else ", " + text)
            first = False
    f.write("]")


def _write_catalogue(
    b: Any, path: Path, extras: dict[str, tuple[np.ndarray, np.ndarray]], chunk: int
) -> None:
    """catalogue.json (model.bundle's layout) with the padded items appended per domain."""
    with open(path, "w") as f:
        f.write("{")
        for k, (d, (a, pop)) in enumerate(extras.items()):
            f.write(("" if k == 0 else ", ") + json.dumps(d) + ": ")
            _catalogue_domain(f, d, b.domains[d], a, pop, chunk)
        f.write("}")


def _catalogue_domain(
    f: IO[str], d: str, s: Any, a: np.ndarray, pop: np.ndarray, chunk: int
) -> None:
    def chunked(real: list[Any], extra: Callable[[np.ndarray], list[Any]]) -> Iterator[list[Any]]:
        yield list(real)
        for lo in range(0, len(a), chunk):
            yield extra(np.arange(lo, min(len(a), lo + chunk)))

    f.write('{"user_ids": ')
    _json_list(f, [list(s.user_ids)])
    f.write(', "item_ids": ')
    _json_list(f, chunked(s.item_ids, lambda ks: [pad_id(d, j) for j in ks.tolist()]))
    f.write(', "titles": ')
    _json_list(f, chunked(s.titles, lambda ks: [s.titles[j] for j in a[ks].tolist()]))
    f.write(', "categories": ')
    _json_list(f, chunked(s.categories, lambda ks: [s.categories[j] for j in a[ks].tolist()]))
    f.write(', "popularity": ')
    _json_list(f, chunked([int(x) for x in s.popularity], lambda ks: pop[ks].tolist()))
    f.write("}")


def pad_id(domain: str, k: int) -> str:
    return f"{domain}-pad-{k:07d}"


def ensure_bundle(
    src: Path,
    work: Path,
    n_items: int,
    *,
    blend: bool = True,
    domains: Collection[str] | None = None,
) -> Path:
    """The padded bundle for ``n_items`` (in ``domains``; None = all), reused when it was
    made from the same model the same way."""
    from model.bundle import read_manifest

    manifest = read_manifest(src)
    src_version = manifest["model_version"]
    name = f"bundle-{n_items}" + ("" if domains is None else "-" + "-".join(sorted(domains)))
    dst = work / (name if blend else f"{name}-no-blend")
    want = sorted(domains) if domains is not None else list(manifest["domains"])
    if (dst / "manifest.json").is_file():
        padded = read_manifest(dst).get("data", {}).get("padded", {})
        if (
            padded.get("from_model_version") == src_version
            and padded.get("seed") == PAD_SEED
            and padded.get("domains") == want
        ):
            log(f"reusing {dst}")
            return dst
    log(f"padding {src} to {n_items:,} items per domain ({', '.join(want)}) -> {dst}")
    t = time.perf_counter()
    pad_bundle(src, dst, n_items, blend=blend, domains=domains)
    log(f"padded in {time.perf_counter() - t:.0f} s")
    return dst
