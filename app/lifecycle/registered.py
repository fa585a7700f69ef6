"""Items registered through the API, as one loaded model serves them.

:class:`RegisteredItems` is the one owner of that state: which items a model state holds,
the change-feed position each was last applied at, and the caches derived from them.
It changes only under the write lock (app/lifecycle/served.py); reads take no lock (a dict
read is atomic, and every scan iterates over a copy).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.api.schemas import ItemOut
from app.lifecycle.categories import category_matches, split_categories
from app.store.base import StoredItem


@dataclass(frozen=True)
class ItemMeta:
    """A registered (API) item as this process serves it."""

    item_id: str
    domain: str
    title: str
    categories: str
    description: str
    modalities: tuple[str, ...]
    created_at: float
    updated_at: float
    picture: bool = False
    """The store holds a picture of it (GET /v1/items/{id}/image)."""

    @classmethod
    def of(cls, item: StoredItem) -> ItemMeta:
        return cls(
            item_id=item.item_id,
            domain=item.domain,
            title=item.title,
            categories=item.categories,
            description=item.description,
            modalities=tuple(sorted(item.content)),
            created_at=item.created_at,
            updated_at=item.updated_at,
            picture=item.picture is not None,
        )

    def to_out(self) -> ItemOut:
        return ItemOut(
            item_id=self.item_id,
            domain=self.domain,
            title=self.title,
            categories=split_categories(self.categories),
            description=self.description,
            origin="api",
            modalities=list(self.modalities),
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


Latest = list[tuple[str, float]]
"""(item id, created_at) of a domain's registered items, newest first."""


class RegisteredItems:
    """Registered items of one model state, by id.

    ``version`` is bumped on every change; caches over these items (here the newest-first
    lists, in app/lifecycle/popularity.py the rankings) are valid while it is unchanged.
    """

    def __init__(self) -> None:
        self._items: dict[str, ItemMeta] = {}
        self._applied_seq: dict[str, int] = {}
        """item id -> change-feed seq last applied here (older/equal entries are skipped)."""
        self.version = 0
        self._latest: dict[str, tuple[int, Latest]] = {}
        """domain -> (version it was computed at, newest-first list)."""

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: str) -> ItemMeta | None:
        return self._items.get(item_id)

    def in_domain(self, domain: str) -> list[ItemMeta]:
        return [m for m in list(self._items.values()) if m.domain == domain]

    def count(self, domain: str | None = None) -> int:
        return len(self._items) if domain is None else len(self.in_domain(domain))

    def matching(self, domain: str, prefix: str) -> list[str]:
        """Ids in ``domain`` whose categories match ``prefix`` (see ``category_matches``)."""
        return [m.item_id for m in self.in_domain(domain) if category_matches(m.categories, prefix)]

    # --- changes (the caller holds the write lock) --------------------------------
    def is_newer_than(self, item_id: str, seq: int) -> bool:
        """True when a later change of ``item_id`` than ``seq`` was already applied."""
        return self._applied_seq.get(item_id, -1) > seq

    def has_applied(self, item_id: str, seq: int) -> bool:
        """True when change ``seq`` of ``item_id`` (or a later one) was already applied."""
        return self._applied_seq.get(item_id, -1) >= seq

    def put(self, meta: ItemMeta, seq: int) -> None:
        self._items[meta.item_id] = meta
        self._applied_seq[meta.item_id] = seq
        self.version += 1

    def remove(self, item_id: str, seq: int) -> ItemMeta | None:
        """Drop ``item_id`` (recording ``seq`` either way); the removed item, if any."""
        meta = self._items.pop(item_id, None)
        self._applied_seq[item_id] = seq
        if meta is not None:
            self.version += 1
        return meta

    # --- derived ----------------------------------------------------------------------
    def latest(self, domain: str) -> Latest:
        """Registered items of ``domain``, newest first (cached until items change)."""
        version = self.version
        cached = self._latest.get(domain)
        if cached is not None and cached[0] == version:
            return cached[1]
        metas = self.in_domain(domain)
        metas.sort(key=lambda m: (m.created_at, m.item_id), reverse=True)
        latest = [(m.item_id, m.created_at) for m in metas]
        self._latest[domain] = (version, latest)
        return latest
