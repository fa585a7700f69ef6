"""One loaded model and everything the service derives from it (:class:`ModelState`).

A state is built whole by :func:`build_state` (engine + one ``DomainIndex`` per domain)
and published by the change feed (app/lifecycle/feed.py) into app/lifecycle/served.py; a reload builds a new one and swaps the
reference. A request reads ``service.state`` once and uses that object to the end, so a
reload never changes the model under a running request.

Bundle facts (ids, rows, titles, categories, training popularity) are asked of the engine,
which owns them; the state adds what serving needs on top: the indexes, a category index
per domain, and the items registered through the API (:class:`RegisteredItems`).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from app.api.errors import InvalidInput
from app.api.ids import is_normal_id
from app.api.schemas import IndexCalibrationInfo, IndexInfo, ModelInfo
from app.api.validation import shown
from app.index.domain import DomainIndex
from app.index.milvus import MilvusDomainIndex
from app.index.milvus_conn import MilvusConfig
from app.index.protocol import ItemIndex
from app.lifecycle.categories import CategoryIndex
from app.lifecycle.engine import Engine
from app.lifecycle.registered import RegisteredItems
from app.settings import Settings
from model.serving_cache import cache_key

log = logging.getLogger("micrec.service")

FILTER_EXACT_MAX_ITEMS = 20_000
"""A category filter matching at most this many items of a domain scores them exactly
(~2 ms per 10k items); broader filters search the index and keep the matches."""

_generations = itertools.count(1)


@dataclass
class ModelState:
    """One loaded model and everything derived from it; swapped whole on reload.

    ``engine``, ``indexes`` and ``category_index`` are built once; the indexes' registered
    items, ``registered``, ``replayed`` and ``feed_seq`` change only under the feed's
    write lock.
    """

    engine: Engine
    bundle_path: Path
    loaded_at: float
    indexes: dict[str, ItemIndex]
    category_index: dict[str, CategoryIndex]
    """domain -> its bundle items by category prefix."""
    registered: RegisteredItems = field(default_factory=RegisteredItems)
    replayed: bool = False
    """False while registered items could not be replayed (store down at load)."""
    feed_seq: int = 0
    """Change-feed position this state has applied everything up to."""
    generation: int = field(default_factory=lambda: next(_generations))
    """Unique per state: caches kept outside the state key on it."""

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    @property
    def domains(self) -> list[str]:
        return list(self.engine.domains)

    def registered_count(self, domain: str | None = None) -> int:
        return self.registered.count(domain)

    def is_bundle_item(self, item_id: str) -> bool:
        return self.engine.bundle_position(item_id) is not None

    def item_domain(self, item_id: str) -> str | None:
        pos = self.engine.bundle_position(item_id)
        if pos is not None:
            return pos[0]
        meta = self.registered.get(item_id)
        return meta.domain if meta else None

    def categories_of(self, item_id: str) -> str:
        pos = self.engine.bundle_position(item_id)
        if pos is not None:
            return self.engine.catalogue(pos[0]).categories[pos[1]]
        meta = self.registered.get(item_id)
        return meta.categories if meta else ""

    def bundle_popularity(self, domain: str, item_id: str) -> int:
        """Training popularity of a bundle item of ``domain`` (0 for any other id)."""
        pos = self.engine.bundle_position(item_id)
        if pos is None or pos[0] != domain:
            return 0
        return int(self.engine.catalogue(domain).popularity[pos[1]])

    def category_candidates(self, domain: str, prefix: str) -> list[str] | None:
        """Ids of ``domain`` (bundle and registered) whose categories match ``prefix``, or
        None when more than FILTER_EXACT_MAX_ITEMS might (a search then finds them)."""
        rows = self.category_index[domain].rows(prefix, at_most=FILTER_EXACT_MAX_ITEMS)
        if rows is None:
            return None
        ids = self.engine.catalogue(domain).item_ids
        out = [ids[row] for row in rows.tolist()]
        out += self.registered.matching(domain, prefix)
        return out if len(out) <= FILTER_EXACT_MAX_ITEMS else None

    def check_domain(self, domain: str) -> None:
        if domain not in self.indexes:
            raise InvalidInput(
                f"unknown domain {shown(domain)}; valid domains: {', '.join(self.domains)}"
            )

    def info(self) -> ModelInfo:
        """What GET /v1/model shows."""
        return ModelInfo(
            model_version=self.model_version,
            loaded_at=self.loaded_at,
            dim=self.engine.dim,
            domains=self.domains,
            indexes={d: self._index_info(d, index) for d, index in self.indexes.items()},
            encoders=dict(self.engine.encoders_info),
            query_modalities=self.engine.query_modalities(),
            registered_items=self.registered_count(),
        )

    def _index_info(self, domain: str, index: ItemIndex) -> IndexInfo:
        c = index.calibration
        return IndexInfo(
            kind=index.kind,
            size=len(index),
            bundle_items=len(self.engine.catalogue(domain).item_ids),
            registered_items=self.registered_count(domain),
            nprobe=index.nprobe,
            calibration=None
            if c is None
            else IndexCalibrationInfo(
                target_recall=c.target_recall,
                recall=c.recall,
                k=c.k,
                queries=c.queries,
                exact_instead=c.exact_instead,
            ),
        )


def build_state(engine: Engine, path: Path, settings: Settings) -> ModelState:
    """A new state for ``engine`` (loaded from ``path``): the bundle catalogue indexed, no
    registered items yet (the feed replays them)."""
    _warn_unreachable_ids(engine)
    return ModelState(
        engine=engine,
        bundle_path=path,
        loaded_at=time.time(),
        indexes={d: build_domain_index(engine, d, settings, path) for d in engine.domains},
        category_index={
            d: CategoryIndex.of(engine.catalogue(d).categories) for d in engine.domains
        },
    )


def _warn_unreachable_ids(engine: Engine) -> None:
    """A bundle trained before ids were NFKC-normalised may hold ids no request can name
    (requests are normalised, app/api/ids.py): say so, it is fixed by retraining."""
    for d in engine.domains:
        cat = engine.catalogue(d)
        if cat.unreachable is None:  # not counted when the columns were written: count now
            odd = [i for i in cat.item_ids if not is_normal_id(i)]
            count, first = len(odd), odd[0] if odd else ""
        else:
            count, first = cat.unreachable
        if count:
            log.warning(
                "%s: %d bundle item id(s) are not in normal form (NFKC, trimmed), e.g. %r; "
                "requests cannot name them: retrain (the loader normalises ids)",
                d,
                count,
                first[:60],
            )


def _bundle_row(engine: Engine, domain: str, item_id: str) -> int | None:
    pos = engine.bundle_position(item_id)
    return pos[1] if pos is not None and pos[0] == domain else None


def bundle_key(path: Path) -> str:
    """What a bundle's derived files depend on: its manifest (every file's sha256)."""
    return cache_key(Path(path) / "manifest.json", {})


def milvus_config(settings: Settings) -> MilvusConfig:
    """The Milvus backend's settings (``MICREC_MILVUS_*``)."""
    token = settings.milvus_token
    return MilvusConfig(
        uri=settings.milvus_uri,
        token=token.get_secret_value() if token is not None else "",
        prefix=settings.milvus_collection_prefix,
        consistency=settings.milvus_consistency,
        timeout_s=settings.milvus_timeout_s,
        retry_s=settings.milvus_retry_s,
        index=settings.milvus_index,
        hnsw_ef=settings.milvus_hnsw_ef,
        insert_batch=settings.milvus_insert_batch,
        fill_wait_s=settings.milvus_fill_wait_s,
        keep_versions=settings.milvus_keep_versions,
    )


def build_domain_index(
    engine: Engine, domain: str, settings: Settings, path: Path | None = None
) -> ItemIndex:
    """The serving index of ``domain``'s bundle catalogue, as ``settings`` configure it.

    An IVF index (catalogues above ``exact_index_max_items``) has its nprobe calibrated on
    up to ``ivf_calibration_queries`` real bundle users of the domain. With a serving cache
    (``settings.serving_cache_root(path)``) the index is built once per machine and
    memory-mapped by every worker. With ``index_backend=milvus``: the domain's collection
    in the shared Milvus instead (app/index/milvus.py), no local index.
    """
    cat = engine.catalogue(domain)
    bundle = path is not None and (Path(path) / "manifest.json").is_file()
    if settings.index_backend == "milvus":
        shared = MilvusDomainIndex(domain, engine.dim, milvus_config(settings))
        shared.build(
            cat.item_ids,
            cat.vectors,
            source_key=bundle_key(path) if bundle and path else "",
            positions=partial(_bundle_row, engine, domain),
        )
        return shared
    index = DomainIndex(
        domain,
        engine.dim,
        exact_max_items=settings.exact_index_max_items,
        ivf_nlist=settings.ivf_nlist,
        ivf_nprobe=settings.ivf_nprobe,
        ivf_target_recall=settings.ivf_target_recall,
        ivf_rerank=settings.ivf_rerank,
        threads=settings.faiss_threads,
        dtype=settings.vector_dtype,
    )
    queries = None
    if settings.ivf_calibration_queries:
        # called only when the index is built (not when a cached one is mapped)
        queries = partial(engine.sample_user_vectors, domain, settings.ivf_calibration_queries)
    index.build(
        cat.item_ids,
        cat.vectors,
        queries=queries,
        cache_root=settings.serving_cache_root(path) if bundle and path else None,
        source_key=bundle_key(path) if bundle and path else "",
        positions=partial(_bundle_row, engine, domain),  # the engine's map, not a copy
    )
    c = index.calibration
    if c is not None and c.exact_instead:
        log.warning(
            "%s: IVF needs nprobe %d of %d lists for recall@%d %.2f: serving exact search",
            domain,
            c.nprobe,
            c.nlist,
            c.k,
            c.target_recall,
        )
    elif c is not None:
        log.info(
            "%s: IVF nprobe %d reaches recall@%d %.3f (target %.2f) on %d bundle users (%.1f s)",
            domain,
            c.nprobe,
            c.k,
            c.recall,
            c.target_recall,
            c.queries,
            c.seconds,
        )
    elif index.kind in ("ivf", "ivf-pq"):
        log.warning(
            "%s: IVF index not calibrated (no bundle users); nprobe %s", domain, index.nprobe
        )
    return index
