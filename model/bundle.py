"""The trained-model bundle: a directory that loads without unpickling anything.

Layout::

    manifest.json              format version, model version, config, domains, encoders,
                               data fingerprint, training metrics, sha256 of every file
    weights.safetensors        model parameters (template tables, projections, head, alpha)
    domain-<k>.safetensors     per-domain serving state: template rows, item layer states,
                               degrees, content vectors, users' input histories (CSR)
    catalogue.json             per-domain user/item ids, titles, categories, popularity
    blend.safetensors          the score blend's content reducer (model.nn.blend), if any
    copurchase.safetensors     the blend's cross-domain co-purchase transitions (CSR,
                               model.nn.copurchase), if any (both: model.bundle_blend)
    bridge.safetensors         the cross-domain maps (model.nn.bridge), if any
    itemmap.safetensors        the content -> item vector maps (model.nn.itemmap), if any
    tuning.json                every blend-fit and tuning trial (params -> validation NDCG)

Loading verifies the format version and the sha256 of every listed file before parsing
anything but the manifest; a missing, mismatched or tampered file raises ``BundleError``.
A bundle is self-contained: the manifest and every file it lists must resolve inside the
bundle directory, so a symlink out of it (to a file the bundle's author does not own, or
one that changes after the check) is refused like a missing file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model.bundle_blend import read_blend, write_blend
from model.nn.blend import Blend, DomainBlend
from model.nn.bridge import Bridges
from model.nn.config import MICRecConfig
from model.nn.foldin import DomainEmbedder
from model.nn.graph import TemplateMap
from model.nn.itemmap import ItemMaps
from model.nn.micrec import MICRec

FORMAT_VERSION = 1


class BundleError(RuntimeError):
    """A bundle cannot be used (missing file, checksum mismatch, wrong format version)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class DomainState:
    """What the service needs of one domain (all arrays, no graph)."""

    domain: str
    user_ids: list[str]
    item_ids: list[str]
    titles: list[str]
    categories: list[str]
    popularity: np.ndarray
    embedder: DomainEmbedder
    history_ptr: np.ndarray
    history_items: np.ndarray
    blend: DomainBlend | None = None
    """The served score's prior and content parts and weights (None: model score only)."""

    def history(self, user: int) -> np.ndarray:
        return self.history_items[self.history_ptr[user] : self.history_ptr[user + 1]]


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    model: MICRec
    domains: dict[str, DomainState]
    blend: Blend | None = None
    bridges: Bridges | None = None
    """The cross-domain maps the rule "bridge" serves with (None: none trained)."""
    item_maps: ItemMaps | None = None
    """The content -> item vector maps of items registered later (None: none trained)."""
    catalogue_loaded: bool = True
    """False when loaded with ``catalogue=False``: the domains' id/title/category lists are
    empty and :func:`read_catalogue` has them."""
    templates_loaded: bool = True
    """False when loaded with ``templates=False``: the embedders' ``item_template`` and
    ``is_template`` are empty placeholders and :func:`item_templates` derives them."""

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])


def _csr(pairs: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    p = pairs[order]
    ptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(ptr, p[:, 0] + 1, 1)
    return np.cumsum(ptr), p[:, 1].astype(np.int64)


def save_bundle(
    out_dir: Path,
    *,
    model: MICRec,
    embedders: dict[str, DomainEmbedder],
    catalogue: dict[str, dict[str, Any]],
    histories: dict[str, np.ndarray],
    encoders: dict[str, dict[str, Any]],
    data: dict[str, Any],
    metrics: dict[str, Any],
    blends: dict[str, DomainBlend] | None = None,
    blend: Blend | None = None,
    tuning: dict[str, Any] | None = None,
    bridges: Bridges | None = None,
    item_maps: ItemMaps | None = None,
) -> Path:
    """Write a bundle atomically (to a temp dir, then rename).

    catalogue[d]: {"user_ids", "item_ids", "titles", "categories", "popularity"};
    histories[d]: the input pairs [n, 2] the embedders were built on (users' histories);
    blends[d] / blend: the fitted score blend; tuning: trials, written to tuning.json.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "weights.safetensors"))
    domain_files = {}
    cat_json: dict[str, Any] = {}
    for k, d in enumerate(model.domains):
        emb = embedders[d]
        tmap = model.templates[d]
        ptr, items = _csr(histories[d], len(catalogue[d]["user_ids"]))
        tensors = {
            "user_rows": torch.from_numpy(tmap.user_rows),
            "item_rows": torch.from_numpy(tmap.item_rows),
            "item_layers": emb.item_layers.cpu(),
            "item_degree": emb.item_degree.cpu(),
            "history_ptr": torch.from_numpy(ptr),
            "history_items": torch.from_numpy(items),
            "cold_scale": torch.tensor([emb.cold_scale], dtype=torch.float32),
        }
        if emb.item_content is not None:
            tensors["item_content"] = emb.item_content.cpu()
        if emb.mapped_rows is not None and emb.mapped is not None:
            tensors["mapped_rows"] = emb.mapped_rows.cpu()
            tensors["mapped"] = emb.mapped.cpu()
        if emb.low_degree_k > 0 and emb.low_rows is not None and emb.low_mapped is not None:
            tensors["low_rows"] = emb.low_rows.cpu()
            tensors["low_mapped"] = emb.low_mapped.cpu()
        if blends and d in blends and blends[d].content is not None:
            tensors["blend_content"] = blends[d].content.cpu()  # type: ignore[union-attr]
        name = f"domain-{k}.safetensors"
        save_file({n: t.contiguous() for n, t in tensors.items()}, str(tmp / name))
        domain_files[d] = name
        c = catalogue[d]
        cat_json[d] = {
            "user_ids": list(c["user_ids"]),
            "item_ids": list(c["item_ids"]),
            "titles": list(c["titles"]),
            "categories": list(c["categories"]),
            "popularity": [int(x) for x in c["popularity"]],
        }
    (tmp / "catalogue.json").write_text(json.dumps(cat_json))
    files = ["weights.safetensors", "catalogue.json", *domain_files.values()]
    blend_meta: dict[str, Any] | None = None
    if blend is not None:
        blend_meta, blend_files = write_blend(tmp, blend)
        files += blend_files
    bridge_meta: dict[str, Any] | None = None
    if bridges is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in bridges.state_dict().items()}
        save_file(state, str(tmp / "bridge.safetensors"))
        bridge_meta = bridges.meta()
        files.append("bridge.safetensors")
    item_map_meta: dict[str, Any] | None = None
    if item_maps is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in item_maps.state_dict().items()}
        save_file(state, str(tmp / "itemmap.safetensors"))
        item_map_meta = item_maps.meta()
        files.append("itemmap.safetensors")
    if tuning is not None:
        (tmp / "tuning.json").write_text(json.dumps(tuning, default=float))
        files.append("tuning.json")
    digest = hashlib.sha256("".join(sha256_file(tmp / f) for f in files).encode()).hexdigest()
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_version": f"micrec-{time.strftime('%Y%m%d')}-{digest[:10]}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_config": model.config.to_dict(),
        "domains": model.domains,
        "domain_files": domain_files,
        "feature_dims": model.feature_dims(),
        "alpha": float(model.alpha),
        "encoders": encoders,
        "blend": blend_meta,
        "bridge": bridge_meta,
        "item_map": item_map_meta,
        "data": data,
        "metrics": metrics,
        "sha256": {f: sha256_file(tmp / f) for f in files},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=float))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def bundle_file(path: Path, name: str) -> Path:
    """``path / name`` if it resolves (symlinks followed) to a file inside the resolved
    ``path``; a link out of the bundle raises :class:`BundleError`. Links inside it are
    fine. (A missing file is the caller's to report.)"""
    f = Path(path) / name
    try:
        inside = f.resolve().is_relative_to(Path(path).resolve())
    except (OSError, RuntimeError) as err:  # a symlink loop, a name too long
        raise BundleError(f"{path}: {name} cannot be resolved ({type(err).__name__})") from None
    if not inside:
        raise BundleError(
            f"{path}: {name} is a link to a file outside the bundle directory; a bundle must "
            "hold its own files"
        )
    return f


def check_self_contained(path: Path) -> None:
    """BundleError unless every entry under ``path`` (files and directories, at any depth)
    resolves inside it: what a copy of the bundle (``BundleRegistry.add``) needs, since a
    copy would otherwise take in whatever the links point at."""
    root = Path(path)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            bundle_file(root, os.path.relpath(os.path.join(dirpath, name), root))


def read_manifest(path: Path) -> dict[str, Any]:
    mpath = Path(path) / "manifest.json"
    if not mpath.is_file():
        raise BundleError(f"{path}: not a bundle (manifest.json missing)")
    bundle_file(Path(path), "manifest.json")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{mpath}: unreadable manifest ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        got = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise BundleError(
            f"{mpath}: bundle format version {got!r}, this code reads {FORMAT_VERSION}"
        )
    return manifest


def verify_bundle(path: Path) -> dict[str, Any]:
    """Manifest after checking every listed file's sha256 (raises BundleError)."""
    path = Path(path)
    manifest = read_manifest(path)
    sums = manifest.get("sha256")
    required = {"weights.safetensors", "catalogue.json", *manifest.get("domain_files", {}).values()}
    if (manifest.get("blend") or {}).get("reducer"):
        required.add("blend.safetensors")
    if (manifest.get("blend") or {}).get("copurchase"):
        required.add("copurchase.safetensors")
    if manifest.get("bridge"):
        required.add("bridge.safetensors")
    if manifest.get("item_map"):
        required.add("itemmap.safetensors")
    if not isinstance(sums, dict) or not required <= set(sums):
        raise BundleError(
            f"{path}: manifest does not list checksums for {sorted(required - set(sums or {}))}"
        )
    for name, expected in sums.items():
        f = path / name
        if Path(name).name != name or not f.is_file():
            raise BundleError(f"{path}: missing file {name}")
        bundle_file(path, name)
        if sha256_file(f) != expected:
            raise BundleError(
                f"{path}: {name} does not match its sha256 in manifest.json (tampered or truncated)"
            )
    return manifest


def read_catalogue(path: Path) -> dict[str, dict[str, Any]]:
    """catalogue.json of the bundle at ``path``: per domain its user and item ids, titles,
    categories and training popularity (as :func:`save_bundle` wrote them)."""
    try:
        cat = json.loads((Path(path) / "catalogue.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: catalogue.json cannot be read ({err})") from err
    if not isinstance(cat, dict):
        raise BundleError(f"{path}: catalogue.json is not an object")
    return cat


TEMPLATE_CHUNK = 1 << 20
"""Items per step when :func:`item_templates` fills its output (64 float32 per item: 256
MB of temporaries per step instead of the whole domain's)."""


def item_templates(
    model: MICRec,
    domain: str,
    out: np.ndarray | None = None,
    is_template: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The embedder's per-item template rows of ``domain`` ([n_items, d] float32: the
    table row of a template item, 0 elsewhere) and ``is_template`` ([n_items] float32),
    written chunk by chunk into ``out`` / ``is_template`` when given (e.g. memory maps of
    the serving cache's files), so no whole-domain temporary is made. What
    :func:`load_bundle` computes per item, row for row."""
    rows_all = model.templates[domain].item_rows
    table = model.table(domain).detach().cpu()
    n = len(rows_all)
    if out is None:
        out = np.empty((n, table.shape[1]), dtype=np.float32)
    if is_template is None:
        is_template = np.empty(n, dtype=np.float32)
    for lo in range(0, n, TEMPLATE_CHUNK):
        rows = torch.as_tensor(np.asarray(rows_all[lo : lo + TEMPLATE_CHUNK]))
        is_tpl = (rows >= 0).float()
        out[lo : lo + len(rows)] = (table[rows.clamp_min(0)] * is_tpl.unsqueeze(1)).numpy()
        is_template[lo : lo + len(rows)] = is_tpl.numpy()
    return out, is_template


def load_bundle(
    path: str | Path, *, device: str = "cpu", catalogue: bool = True, templates: bool = True
) -> Bundle:
    """The bundle at ``path``, verified. ``catalogue=False`` leaves catalogue.json unread
    (the ``DomainState`` id, title and category lists empty, ``Bundle.catalogue_loaded``
    False): the service reads the catalogue from its memory-mapped serving cache
    (model/columns.py) and parses the JSON only when that cache is built.
    ``templates=False`` leaves the embedders' per-item template rows and template flags
    uncomputed (empty placeholders, ``Bundle.templates_loaded`` False; 256 bytes per item
    a worker would otherwise compute and then drop): the service maps them from its
    serving cache, which :func:`item_templates` fills once per machine. The other per-item
    tensors (layer states, degrees, content) are memory maps of the bundle's files
    (safetensors' default), read only where a request needs their rows."""
    path = Path(path)
    manifest = verify_bundle(path)
    try:
        config = MICRecConfig.from_dict(manifest["model_config"])
        cat = read_catalogue(path) if catalogue else {}
        tmaps: dict[str, TemplateMap] = {}
        raw: dict[str, dict[str, torch.Tensor]] = {}
        for d in manifest["domains"]:
            raw[d] = load_file(str(path / manifest["domain_files"][d]), device=device)
            tmaps[d] = TemplateMap(
                raw[d]["user_rows"].cpu().numpy(), raw[d]["item_rows"].cpu().numpy()
            )
        model = MICRec(config, tmaps, manifest.get("feature_dims") or {}).to(device)
        model.load_state_dict(
            load_file(str(path / "weights.safetensors"), device=device), strict=True
        )
        model.eval()
        bridges = None
        if manifest.get("bridge"):
            bridges = Bridges.from_state(
                manifest["bridge"], load_file(str(path / "bridge.safetensors"), device=device)
            )
        item_maps = None
        if manifest.get("item_map"):
            item_maps = ItemMaps.from_state(
                manifest["item_map"], load_file(str(path / "itemmap.safetensors"), device=device)
            )
    except (KeyError, ValueError, RuntimeError, TypeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path}: bundle does not match this model code ({err})") from err
    try:
        blend = read_blend(path, manifest.get("blend"))
    except (KeyError, ValueError, TypeError) as err:
        raise BundleError(f"{path}: {err}") from None
    domains: dict[str, DomainState] = {}
    distinct: dict[str, str] = {}
    for d in manifest["domains"]:
        t = raw[d]
        tmap = tmaps[d]
        table = model.table(d).detach()
        if templates:
            rows = torch.as_tensor(tmap.item_rows, device=table.device)
            is_tpl = (rows >= 0).float()
            item_template = table[rows.clamp_min(0)] * is_tpl.unsqueeze(1)
        else:  # filled by the caller (the serving cache), see item_templates()
            is_tpl = torch.empty(0, device=table.device)
            item_template = torch.empty(0, table.shape[1], device=table.device)
        emb = DomainEmbedder(
            domain=d,
            alpha=float(model.alpha),
            gamma=float(model.domain_gamma(d).detach()),
            item_layers=t["item_layers"],
            item_degree=t["item_degree"],
            item_template=item_template,
            is_template=is_tpl,
            user_token=table[tmap.user_token].clone(),
            item_token=table[tmap.item_token].clone(),
            item_content=t.get("item_content"),
            user_content=config.user_content,
            cold_scale=float(t["cold_scale"][0]) if "cold_scale" in t else 1.0,
            mapped_rows=t.get("mapped_rows"),
            mapped=t.get("mapped"),
            low_rows=t.get("low_rows"),
            low_mapped=t.get("low_mapped"),
            low_degree_k=item_maps.low_degree_k.get(d, 0.0) if item_maps is not None else 0.0,
        )
        c = cat.get(d, {})
        domains[d] = DomainState(
            domain=d,
            user_ids=c.get("user_ids", []),
            item_ids=c.get("item_ids", []),
            titles=c.get("titles", []),
            # one str object per distinct category path (a catalogue has few; JSON
            # decoding makes one per item, ~70 bytes each in every worker)
            categories=[distinct.setdefault(x, x) for x in c.get("categories", [])],
            popularity=np.asarray(c.get("popularity", []), dtype=np.int64),
            embedder=emb,
            history_ptr=t["history_ptr"].cpu().numpy(),
            history_items=t["history_items"].cpu().numpy(),
            blend=None
            if blend is None
            else blend.for_domain(d, t["item_degree"], content=t.get("blend_content")),
        )
    return Bundle(
        path=path,
        manifest=manifest,
        model=model,
        domains=domains,
        blend=blend,
        bridges=bridges,
        item_maps=item_maps,
        catalogue_loaded=catalogue,
        templates_loaded=templates,
    )
