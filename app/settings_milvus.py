"""The index backend group: FAISS in each worker (the default) or a shared Milvus.

Kept apart from app/settings_groups.py (the FAISS index settings) because every key here
only matters with ``index_backend=milvus``; the check across groups (a milvus-lite file
opened by several workers) is in app/settings.py. Why and when to choose Milvus:
docs/service.md "Index backend".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class MilvusSettings(BaseModel):
    """Which engine ranks a domain's items (app/index/domain.py or app/index/milvus.py)."""

    index_backend: Literal["faiss", "milvus"] = Field(
        "faiss",
        description="faiss = one index per domain in every worker, memory-mapped from the "
        "serving cache (the default); milvus = one shared Milvus collection per domain and "
        "bundle version for every replica (MICREC_MILVUS_URI).",
    )
    milvus_uri: str = Field(
        "",
        description="With index_backend=milvus: a Milvus server (http://host:19530; "
        "production, compose.yaml) or a milvus-lite data path ending in .db (opened inside "
        "the worker: one worker only; several workers or replicas share a milvus-lite "
        "through `python -m milvus_lite server --data-dir DIR`, then its http:// URI).",
    )
    milvus_token: SecretStr | None = Field(
        None, description='Milvus credentials ("user:password" or an API key); unset = none.'
    )
    milvus_collection_prefix: str = Field(
        "micrec",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,31}$",
        description="Start of every collection name this service creates (and prunes): one "
        "prefix per deployment sharing a Milvus.",
    )
    milvus_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Strong",
        description="Milvus consistency level of the collections: Strong = a search sees "
        "every write acknowledged before it (a registration is served by the next "
        "recommend on any replica); Bounded is faster on a server but may miss writes of "
        "the last seconds.",
    )
    milvus_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Deadline of each Milvus call of a request (search, upsert, delete); "
        "after a failure further calls fail at once for milvus_retry_s (503 naming Milvus) "
        "instead of each waiting this long.",
    )
    milvus_retry_s: float = Field(
        1.0,
        gt=0,
        description="After a failed Milvus call, how long calls fail fast before Milvus is "
        "tried again.",
    )
    milvus_index: Literal["FLAT", "HNSW"] = Field(
        "FLAT",
        description="Milvus index of the item vectors (metric IP): FLAT = exact, the same "
        "ranking as FAISS exact; HNSW = approximate, for catalogues where exact search is "
        "too slow (M 16, efConstruction 200, search ef = max(k, milvus_hnsw_ef)).",
    )
    milvus_hnsw_ef: int = Field(
        128, ge=1, description="HNSW search breadth (milvus_index=HNSW only)."
    )
    milvus_insert_batch: int = Field(
        5000,
        ge=1,
        le=100_000,
        description="Rows per upsert call while a replica fills a new collection.",
    )
    milvus_fill_wait_s: float = Field(
        600.0,
        gt=0,
        description="A replica finding another one filling the collection it needs waits for "
        "it; a fill not heard of for this long is taken over (the filler died).",
    )
    milvus_keep_versions: int = Field(
        2,
        ge=2,
        description="Collections kept per domain (the most recently used bundle versions; "
        "older ones are dropped after a new one is filled). At least 2: the previous "
        "version serves until the new one is swapped in, on every replica (and a rollback "
        "finds it).",
    )
