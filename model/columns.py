"""The bundle catalogue as columns of numpy arrays, memory-mapped from the serving cache.

A worker used to hold its catalogue as Python objects: a list of ids, titles and categories
and a dict id -> row per domain (~100 bytes per item and per worker: 42.6 MB of lists and
16.5 MB of map at 1e5 items per domain, growing linearly). Written once per machine as
``.npy`` files (model/serving_cache.py) and mapped read-only, the same data is one copy of
page-cache pages that every worker shares, and start-up creates no per-item object.

* :class:`StringColumn`: n strings as one UTF-8 byte buffer + n+1 offsets (the layout of
  Arrow's string arrays): row k is ``data[offsets[k]:offsets[k+1]]``.
* :class:`CategoryColumn`: a dictionary-encoded column (catalogues repeat a few thousand
  category strings over millions of items): int32 codes + the distinct strings.
* :class:`IdLookup`: id -> int64 value as a sorted fixed-width byte array (``S<w>``, w =
  the longest id in bytes) searched with ``np.searchsorted``, plus the values in the same
  order. A lookup is a binary search (log2(1e7) ~ 23 comparisons); :meth:`get_many`
  resolves a whole history in one call.

Every class works the same on in-memory arrays (``from_*`` builders: a bundle served
without a cache, tests) and on memory maps (``load``).
"""

from __future__ import annotations

import functools
import itertools
import json
import mmap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from model.data.ids import is_normal_id

_ENC = "surrogatepass"

GET_CACHE = 1 << 16
"""Ids whose :meth:`IdLookup.get` answer a process keeps (~10 MB)."""  # ids decoded from JSON may hold lone surrogates: round-trip them


def _save(directory: Path, name: str, array: np.ndarray) -> None:
    np.save(Path(directory) / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


def _load(directory: Path, name: str) -> np.ndarray:
    return np.load(Path(directory) / f"{name}.npy", mmap_mode="r", allow_pickle=False)


class StringColumn(Sequence[str]):
    """n strings: ``data`` uint8 [total bytes] (UTF-8), ``offsets`` int64 [n + 1]."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        if offsets.ndim != 1 or len(offsets) < 1:
            raise ValueError("offsets must be a 1-d array of n + 1 positions")
        # plain ndarray views of the maps: np.memmap's subclass hooks cost microseconds on
        # every slice, and a recommend reads dozens of rows (the pages stay the file's)
        self.data = np.asarray(data)
        self.offsets = np.asarray(offsets)
        self._n = len(offsets) - 1

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        encoded = [s.encode("utf-8", _ENC) for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(data, offsets)

    def save(self, directory: Path, name: str) -> None:
        _save(directory, f"{name}-data", self.data)
        _save(directory, f"{name}-offsets", self.offsets)

    @classmethod
    def load(cls, directory: Path, name: str) -> StringColumn:
        return cls(_load(directory, f"{name}-data"), _load(directory, f"{name}-offsets"))

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, row: int) -> str: ...
    @overload
    def __getitem__(self, row: slice) -> list[str]: ...
    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return [self[k] for k in range(*row.indices(len(self)))]
        n = self._n
        k = int(row)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"row {row} out of range for {n} strings")
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        return self.data[a:b].tobytes().decode("utf-8", _ENC)

    def __iter__(self) -> Iterator[str]:
        # in blocks: one decode of a block's bytes, no per-row array slicing
        n, step = len(self), 1 << 16
        for start in range(0, n, step):
            stop = min(start + step, n)
            off = np.asarray(self.offsets[start : stop + 1])
            block = self.data[int(off[0]) : int(off[-1])].tobytes()
            rel = (off - off[0]).tolist()
            for a, b in itertools.pairwise(rel):
                yield block[a:b].decode("utf-8", _ENC)

    def take(self, rows: Iterable[int]) -> list[str]:
        return [self[int(r)] for r in rows]


class CategoryColumn(Sequence[str]):
    """One category string per row, dictionary-encoded: ``codes`` int32 [n] index
    ``names`` (the distinct strings, a small Python list)."""

    def __init__(self, codes: np.ndarray, names: Sequence[str]) -> None:
        self.codes = np.asarray(codes)
        self.names = list(names)

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> CategoryColumn:
        number: dict[str, int] = {}
        codes = np.fromiter((number.setdefault(s, len(number)) for s in strings), dtype=np.int32)
        return cls(codes, list(number))

    def save(self, directory: Path, name: str) -> None:
        _save(directory, f"{name}-codes", self.codes)
        StringColumn.from_strings(self.names).save(directory, f"{name}-names")

    @classmethod
    def load(cls, directory: Path, name: str) -> CategoryColumn:
        return cls(
            _load(directory, f"{name}-codes"), list(StringColumn.load(directory, f"{name}-names"))
        )

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, row: int) -> str: ...
    @overload
    def __getitem__(self, row: slice) -> list[str]: ...
    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return [self.names[c] for c in np.asarray(self.codes[row]).tolist()]
        return self.names[int(self.codes[row])]

    def __iter__(self) -> Iterator[str]:
        names, step = self.names, 1 << 16
        for start in range(0, len(self.codes), step):
            for c in np.asarray(self.codes[start : start + step]).tolist():
                yield names[c]


class IdLookup:
    """id -> int64 value over a fixed set of ids (module doc). Ids must not contain NUL
    (numpy's fixed-width bytes drop trailing NULs); a duplicate id keeps its last value, as
    a dict built in the same order would."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        if keys.dtype.kind != "S" or len(keys) != len(values):
            raise ValueError("keys must be fixed-width bytes, one per value")
        self.keys = np.asarray(keys)  # plain views, as StringColumn's
        self.values = np.asarray(values)
        # A binary search through numpy costs microseconds per call and a recommend asks
        # for dozens of ids, mostly the same popular ones: the recent answers are kept
        # (bounded, so memory does not grow with the catalogue).
        self.get = functools.lru_cache(maxsize=GET_CACHE)(self._get)  # type: ignore[method-assign]

    @classmethod
    def build(cls, ids: Iterable[str], values: np.ndarray) -> IdLookup:
        encoded = [i.encode("utf-8", _ENC) for i in ids]
        if any(b"\x00" in b for b in encoded):
            raise ValueError("ids must not contain NUL characters")
        width = max((len(b) for b in encoded), default=0) or 1
        keys = np.array(encoded, dtype=f"S{width}") if encoded else np.empty(0, f"S{width}")
        del encoded
        values = np.asarray(values, dtype=np.int64)
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} ids for {len(values)} values")
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        last = np.ones(len(keys), dtype=bool)  # the last of each run of equal ids
        last[:-1] = keys[:-1] != keys[1:]
        return cls(keys[last], values[last])

    def save(self, directory: Path, name: str) -> None:
        _save(directory, f"{name}-keys", self.keys)
        _save(directory, f"{name}-values", self.values)

    @classmethod
    def load(cls, directory: Path, name: str) -> IdLookup:
        return cls(_load(directory, f"{name}-keys"), _load(directory, f"{name}-values"))

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, item_id: str) -> int | None:
        """The value of ``item_id``, or None (answers of recent calls are memoised)."""
        return self._get(item_id)

    def _get(self, item_id: str) -> int | None:
        b = item_id.encode("utf-8", _ENC)
        if len(b) > self.keys.dtype.itemsize or b"\x00" in b or not len(self.keys):
            return None
        pos = int(np.searchsorted(self.keys, b))
        if pos < len(self.keys) and self.keys[pos] == b:
            return int(self.values[pos])
        return None

    def get_many(self, ids: Sequence[str]) -> np.ndarray:
        """The values of ``ids`` (int64 [len(ids)], -1 where absent): one search for all."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not len(ids) or not len(self.keys):
            return out
        width = self.keys.dtype.itemsize
        encoded = [i.encode("utf-8", _ENC) for i in ids]
        ok = [k for k, b in enumerate(encoded) if len(b) <= width and b"\x00" not in b]
        if not ok:
            return out
        q = np.array([encoded[k] for k in ok], dtype=self.keys.dtype)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        hit = self.keys[pos] == q
        rows = np.asarray(ok, dtype=np.int64)
        out[rows[hit]] = self.values[pos[hit]]
        return out


def is_mapped(array: np.ndarray) -> bool:
    """Whether ``array``'s memory is a file mapping (np.load(mmap_mode=...) or a view)."""
    base: object = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def unreachable_ids(ids: Iterable[str]) -> tuple[int, str]:
    """(how many of ``ids`` are not in normal form, the first of them or ""): requests are
    normalised, so the service cannot be asked for these (counted once, at cache build)."""
    count, first = 0, ""
    for i in ids:
        if not is_normal_id(i):
            count += 1
            first = first or i
    return count, first


@dataclass
class DomainColumns:
    """One domain's bundle catalogue as columns (row = the domain's item row)."""

    item_ids: StringColumn
    titles: StringColumn
    categories: CategoryColumn
    popularity: np.ndarray
    """int64 [n] training degree."""
    users: IdLookup
    """user id -> row of the domain's bundle users (their histories)."""
    unreachable: tuple[int, str]
    """Item ids not in normal form: (count, first one) (:func:`unreachable_ids`)."""


@dataclass
class CatalogueColumns:
    """Every domain's columns + one id -> ``domain number << 32 | row`` lookup over all
    bundle items (domain numbers = positions in the bundle's domain order)."""

    domains: dict[str, DomainColumns]
    items: IdLookup

    @classmethod
    def from_catalogue(
        cls, order: Sequence[str], catalogue: Mapping[str, Mapping[str, Any]]
    ) -> CatalogueColumns:
        """From catalogue.json's per-domain lists (model.bundle.read_catalogue)."""
        domains = {}
        for d in order:
            c = catalogue[d]
            n_users = len(c["user_ids"])
            domains[d] = DomainColumns(
                item_ids=StringColumn.from_strings(c["item_ids"]),
                titles=StringColumn.from_strings(c["titles"]),
                categories=CategoryColumn.from_strings(c["categories"]),
                popularity=np.asarray(c["popularity"], dtype=np.int64),
                users=IdLookup.build(c["user_ids"], np.arange(n_users, dtype=np.int64)),
                unreachable=unreachable_ids(c["item_ids"]),
            )
        codes = np.concatenate(
            [
                (k << 32) | np.arange(len(catalogue[d]["item_ids"]), dtype=np.int64)
                for k, d in enumerate(order)
            ]
            or [np.empty(0, np.int64)]
        )
        items = IdLookup.build(
            itertools.chain.from_iterable(catalogue[d]["item_ids"] for d in order), codes
        )
        return cls(domains, items)

    def save(self, directory: Path, stems: Mapping[str, str]) -> None:
        """Write every column as .npy files named after each domain's ``stems[d]``."""
        meta = {}
        for d, c in self.domains.items():
            s = stems[d]
            c.item_ids.save(directory, f"ids-{s}")
            c.titles.save(directory, f"titles-{s}")
            c.categories.save(directory, f"categories-{s}")
            _save(directory, f"popularity-{s}", c.popularity)
            c.users.save(directory, f"users-{s}")
            meta[s] = [c.unreachable[0], c.unreachable[1][:60]]
        self.items.save(directory, "items")
        (Path(directory) / COLUMNS_META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path, stems: Mapping[str, str]) -> CatalogueColumns:
        """The columns :meth:`save` wrote, memory-mapped read-only."""
        meta = json.loads((Path(directory) / COLUMNS_META).read_text())
        domains = {}
        for d, s in stems.items():
            domains[d] = DomainColumns(
                item_ids=StringColumn.load(directory, f"ids-{s}"),
                titles=StringColumn.load(directory, f"titles-{s}"),
                categories=CategoryColumn.load(directory, f"categories-{s}"),
                popularity=_load(directory, f"popularity-{s}"),
                users=IdLookup.load(directory, f"users-{s}"),
                unreachable=(int(meta[s][0]), str(meta[s][1])),
            )
        return cls(domains, IdLookup.load(directory, "items"))


COLUMNS_META = "columns.json"
