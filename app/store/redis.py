"""The :class:`Store` contract on a real Redis (shared by replicas).

Where the pieces are: the key layout, the Lua scripts and the value encodings are in
app/store/redis_layout.py; the client, its error mapping and the durability check in
app/store/redis_conn.py (the base class); the export's paged reads in app/store/paging.py;
the recommend's read on the event loop in app/store/redis_async.py; served
recommendations, their feedback and the online counters in app/store/redis_online.py.

Atomicity: item writes are Lua scripts (they need the INCR result inside the same atomic
step); interaction batches are one MULTI/EXEC; a user erasure is one Lua script. Durability
and failures: see app/store/redis_conn.py.

Erased data in the append-only file: an erasure's commands delete the user's keys, but
the AOF still holds the commands that wrote them until it is rewritten. ``purge_erased``
starts that rewrite (BGREWRITEAOF, which forks: everything written before the call is in
the snapshot it writes, and the old files are deleted when it completes), at most once per
``min_interval_s`` across all replicas (the ``purgelock`` key), plus an RDB snapshot when
the server also keeps one (``save`` points).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from app.store import paging
from app.store.base import (
    ErasureRecords,
    IdempotencyRecord,
    Interaction,
    ItemChange,
    PurgeState,
    Store,
    StoredItem,
    StoreUnavailable,
    UserRead,
    WantedBundle,
    erasure_key,
)
from app.store.redis_canary import RedisCanary
from app.store.redis_layout import (
    CLAIM_KEY,
    CLEAR_PURGE,
    COUNT_NEW_PAIRS,
    DELETE_ITEM,
    ERASE_USER,
    PUT_ITEM,
    SETTLE_CLAIM,
    RedisKeys,
    as_str,
    decode_item,
    decode_record,
    encode_item,
    encode_record,
)
from app.store.redis_online import RedisOnline


class RedisStore(RedisCanary, RedisOnline, Store):
    """:class:`Store` on Redis at ``url`` (``redis://host:port/db``, ``rediss://``, ``unix://``).

    Construction does not need the server (it only tries a best-effort durability check),
    so a service can start while Redis is down, report itself degraded, and the store works
    as soon as Redis answers. ``max_connections`` caps the pool; a call beyond it fails
    with StoreUnavailable instead of queueing (size it above the server's thread pool).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "micrec:",
        socket_timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        max_connections: int | None = 64,
    ) -> None:
        super().__init__(
            url,
            socket_timeout_s=socket_timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )
        self.prefix = prefix
        self.keys = RedisKeys(prefix)
        self._put = self._r.register_script(PUT_ITEM)
        self._delete = self._r.register_script(DELETE_ITEM)
        self._settle = self._r.register_script(SETTLE_CLAIM)
        self._claim = self._r.register_script(CLAIM_KEY)
        self._erase = self._r.register_script(ERASE_USER)
        self._clear_purge = self._r.register_script(CLEAR_PURGE)
        self._init_online()
        self._warn_if_not_durable()
        self.migrate_erasures()

    # --- items -------------------------------------------------------------------------
    def put_item(self, item: StoredItem) -> int:
        fields = encode_item(item)
        with self._errors():
            seq = self._put(keys=self.keys.item_script(item.item_id), args=[item.item_id, *fields])
        return int(seq)

    def get_item(self, item_id: str) -> StoredItem | None:
        with self._errors():
            h: Any = self._r.hgetall(self.keys.item(item_id))
        return decode_item(item_id, h) if h else None

    def delete_item(self, item_id: str) -> int | None:
        with self._errors():
            seq = self._delete(keys=self.keys.item_script(item_id), args=[item_id])
        return None if seq is None else int(seq)

    def list_items(self, *, batch: int = 500) -> list[StoredItem]:
        with self._errors():
            ids = sorted(as_str(m) for m in self._r.smembers(self.keys.items))
            out: list[StoredItem] = []
            for start in range(0, len(ids), batch):
                chunk = ids[start : start + batch]
                pipe = self._r.pipeline(transaction=True)
                for item_id in chunk:
                    pipe.hgetall(self.keys.item(item_id))
                hashes = pipe.execute()
                # An item deleted since SMEMBERS has an empty hash: it is simply not listed.
                out += [decode_item(i, h) for i, h in zip(chunk, hashes, strict=True) if h]
        return out

    def item_changes(self, after_seq: int, limit: int = 1000) -> list[ItemChange]:
        with self._errors():
            rows: Any = self._r.zrangebyscore(
                self.keys.changes, f"({int(after_seq)}", "+inf", start=0, num=limit, withscores=True
            )
        out = []
        for member, score in rows:
            m = as_str(member)
            out.append(ItemChange(seq=int(score), item_id=m[1:], deleted=m[0] == "d"))
        return out

    # --- interactions ------------------------------------------------------------------
    def add_interactions(
        self,
        rows: Sequence[Interaction],
        history_cap: int,
        *,
        source: str = "",
        source_cap: int = 0,
    ) -> dict[tuple[str, str], int]:
        if history_cap < 1:
            raise ValueError(f"history_cap must be >= 1, got {history_cap}")
        if not rows:
            return {}
        # Group per (user, domain) keeping the given order: "newest" means appended last.
        groups: dict[tuple[str, str], list[Interaction]] = {}
        for r in rows:
            groups.setdefault((r.user_id, r.domain), []).append(r)
        pairs: dict[str, list[str]] = {}  # domain -> item, user, item, user...
        user_pairs: dict[str, list[str]] = {}  # user -> domain\0item, ...
        for domain, item_id, user_id in sorted({(r.domain, r.item_id, r.user_id) for r in rows}):
            pairs.setdefault(domain, []).extend((item_id, user_id))
            user_pairs.setdefault(user_id, []).append(f"{domain}\0{item_id}")
        pipe = self._r.pipeline(transaction=True)  # one MULTI/EXEC: all or nothing
        for (user_id, domain), group in groups.items():
            key, ts_key = self.keys.hist(user_id, domain), self.keys.hist_ts(user_id, domain)
            pipe.rpush(key, *[r.item_id for r in group])
            pipe.ltrim(key, -history_cap, -1)
            pipe.rpush(ts_key, *[repr(float(r.timestamp)) for r in group])
            pipe.ltrim(ts_key, -history_cap, -1)
            pipe.sadd(self.keys.user(user_id), domain)
        pipe.incrby(self.keys.count, len(rows))
        for user_id, domain_items in user_pairs.items():
            pipe.sadd(self.keys.pop_items(user_id), *domain_items)
        for domain, args in pairs.items():
            keys = self.keys.count_script(domain)
            pipe.eval(COUNT_NEW_PAIRS, len(keys), *keys, source, int(source_cap), *args)
        with self._errors():
            results = pipe.execute()
        counts: Counter[tuple[str, str]] = Counter()
        for domain, new_items in zip(pairs, results[-len(pairs) :], strict=True):
            for item in new_items:
                counts[(domain, as_str(item))] += 1
        return dict(counts)

    def get_history(self, user_id: str) -> dict[str, list[str]]:
        with self._errors():
            domains = sorted(as_str(d) for d in self._r.smembers(self.keys.user(user_id)))
            if not domains:
                return {}
            pipe = self._r.pipeline(transaction=True)
            for domain in domains:
                pipe.lrange(self.keys.hist(user_id, domain), 0, -1)
            lists = pipe.execute()
        return {d: [as_str(i) for i in items] for d, items in zip(domains, lists, strict=True)}

    def read_user(self, user_id: str, domains: Sequence[str]) -> UserRead:
        keys = [self.keys.hist(user_id, d) for d in domains]
        with self._errors():
            pipe = self._r.pipeline(transaction=True)  # one round trip, one instant
            pipe.hexists(self.keys.erasures, erasure_key(user_id))
            pipe.hexists(self.keys.erased, user_id)
            for key in keys:
                pipe.lrange(key, 0, -1)
            replies = pipe.execute()
        return self._user_read(domains, replies[0] or replies[1], replies[2:])

    async def read_user_async(self, user_id: str, domains: Sequence[str]) -> UserRead:
        keys = [self.keys.hist(user_id, d) for d in domains]
        with self._errors():
            erased, lists = await self._aio.read(
                (self.keys.erasures, erasure_key(user_id)), (self.keys.erased, user_id), keys
            )
        return self._user_read(domains, erased, lists)

    @staticmethod
    def _user_read(domains: Sequence[str], erased: Any, lists: list[Any]) -> UserRead:
        history = {
            d: [i.decode() for i in ids] for d, ids in zip(domains, lists, strict=True) if ids
        }
        return UserRead(bool(erased), history)

    def popularity(self, domain: str) -> dict[str, int]:
        with self._errors():
            h: Any = self._r.hgetall(self.keys.pop(domain))
        return {as_str(k): int(v) for k, v in h.items()}

    # --- export (paged reads: app/store/paging.py) ---------------------------------------
    def iter_interactions(self, batch: int = 1000) -> Iterator[Interaction]:
        return paging.redis_interactions(self._r, self.keys, self._errors, batch)

    def iter_items(self, batch: int = 500) -> Iterator[StoredItem]:
        return paging.redis_items(self._r, self.keys, self._errors, batch)

    def interaction_count(self) -> int:
        with self._errors():
            value: Any = self._r.get(self.keys.count)
        return int(value or 0)

    # --- user erasure ------------------------------------------------------------------
    def erase_user(self, user_id: str, erased_at: float) -> dict[tuple[str, str], int]:
        with self._errors():
            # The script needs every key it touches up front, so the user's domains are read
            # first; it refuses (None) when a concurrent write added one meanwhile.
            for _ in range(10):
                domains = sorted(as_str(d) for d in self._r.smembers(self.keys.user(user_id)))
                keys = self.keys.erase_script(user_id, domains)
                head = [user_id, repr(float(erased_at)), erasure_key(user_id)]
                args = [*head, self.keys.idem_prefix, *domains]
                out = self._erase(keys=keys, args=args)
                if out is not None:
                    self.erase_recommendations(user_id)
                    return {
                        (as_str(d), as_str(i)): 1 for d, i in zip(out[::2], out[1::2], strict=True)
                    }
        raise StoreUnavailable(f"redis {self._where()}: user {user_id!r} keeps changing")

    def is_erased(self, user_id: str) -> bool:
        with self._errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.hexists(self.keys.erasures, erasure_key(user_id))
            pipe.hexists(self.keys.erased, user_id)
            return any(pipe.execute())

    def erased_users(self) -> ErasureRecords:
        with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.hgetall(self.keys.erasures)
            pipe.hgetall(self.keys.erased)
            by_key, by_id = pipe.execute()
        records = {erasure_key(as_str(u)): float(t) for u, t in by_id.items()}
        for k, t in by_key.items():  # the newer record wins
            records[as_str(k)] = max(float(t), records.get(as_str(k), 0.0))
        return ErasureRecords(records)

    def migrate_erasures(self) -> int:
        """Move the erasure records older versions kept by user id to ``erasures`` by
        pseudonym; returns how many moved. Best effort at construction (the server may be
        down; reads look in both hashes until it is done)."""
        try:
            with self._errors():
                legacy: Any = self._r.hgetall(self.keys.erased)
                if not legacy:
                    return 0
                pipe = self._r.pipeline(transaction=True)
                for user, t in legacy.items():
                    pipe.hset(self.keys.erasures, erasure_key(as_str(user)), t)
                pipe.hdel(self.keys.erased, *legacy)
                pipe.incr(self.keys.purge)  # the ids are in the AOF: rewrite it
                pipe.execute()
                return len(legacy)
        except (StoreUnavailable, redis.RedisError):
            return 0

    def purge_erased(self, min_interval_s: float = 0.0) -> PurgeState:
        with self._errors():
            due: Any = self._r.get(self.keys.purge)
            if due is None:
                return "idle"
            ms = max(1, int(min_interval_s * 1000))
            if not self._r.set(self.keys.purge_lock, b"1", nx=True, px=ms):
                return "waiting"  # a rewrite started less than min_interval_s ago
            if not self._rewrite_files():
                # A rewrite forked before this erasure may be running: once it ends, the
                # next call starts one that leaves the erased data out.
                self._r.delete(self.keys.purge_lock)
                return "waiting"
            self._clear_purge(keys=[self.keys.purge], args=[due])
        return "started"

    # --- bundle version ----------------------------------------------------------------
    def set_bundle_version(self, version: str, announced_at: float) -> None:
        with self._errors():
            self._r.hset(
                self.keys.bundle, mapping={"version": version, "announced_at": repr(announced_at)}
            )

    def get_bundle_version(self) -> WantedBundle | None:
        with self._errors():
            h: Any = self._r.hgetall(self.keys.bundle)
        if not h:
            return None
        return WantedBundle(as_str(h[b"version"]), float(h[b"announced_at"]))

    # --- idempotency keys --------------------------------------------------------------
    def claim_idempotency_key(
        self, key: str, claim: IdempotencyRecord, ttl_s: float
    ) -> IdempotencyRecord | None:
        ttl_ms = max(1, int(ttl_s * 1000))
        keys = [self.keys.idem(key), *self._idem_users(claim)]
        with self._errors():
            found: Any = self._claim(keys=keys, args=[encode_record(claim), ttl_ms, key])
        return None if found is None else decode_record(found)

    def _idem_users(self, record: IdempotencyRecord) -> list[str]:
        return [self.keys.idem_users(u) for u in sorted(set(record.users))]

    def complete_idempotency_key(
        self, key: str, claim: IdempotencyRecord, answer: IdempotencyRecord, ttl_s: float
    ) -> bool:
        args: list[bytes | int | str] = [
            encode_record(claim),
            encode_record(answer),
            max(1, int(ttl_s * 1000)),
            key,
        ]
        keys = [self.keys.idem(key), *self._idem_users(answer)]
        with self._errors():
            return bool(self._settle(keys=keys, args=args))

    def release_idempotency_key(self, key: str, claim: IdempotencyRecord) -> None:
        keys = [self.keys.idem(key), *self._idem_users(claim)]
        with self._errors():
            self._settle(keys=keys, args=[encode_record(claim), b"", 0, key])
