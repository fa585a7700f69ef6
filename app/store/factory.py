"""Build the configured :class:`Store` from a URL (``MICREC_STORE_URL``-style settings)."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.store.base import Store

_SCHEMES = "sqlite:///path/to/state.db or redis://host:port/db (also rediss://, unix://)"


def create_store(url: str) -> Store:
    """``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` -> :class:`SQLiteStore`;
    ``redis://``, ``rediss://``, ``unix://`` -> :class:`RedisStore`; else ValueError.

    SQLite paths follow the SQLAlchemy convention: everything after ``sqlite:///`` is the
    path, so ``sqlite:////var/lib/micrec/state.db`` is absolute and ``sqlite:///state.db``
    is relative to the working directory.
    """
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise ValueError(f"store URL {url!r}: a SQLite URL is sqlite:///<path to file>")
        path = url[len("sqlite:///") :]
        if path == ":memory:":
            # Every thread would get its own private, empty database: never what is meant.
            raise ValueError("store URL sqlite:///:memory: is not supported; use a file path")
        from app.store.sqlite import SQLiteStore

        return SQLiteStore(path)
    if scheme in ("redis", "rediss", "unix"):
        from app.store.redis import RedisStore

        return RedisStore(url)
    raise ValueError(f"unsupported store URL {url!r}; expected {_SCHEMES}")
