"""The :class:`Store` contract on a real Redis (shared by replicas).

Key layout (``P`` = ``prefix``; ids are the whole key suffix, so they may contain ``:``):

* ``P seq``                  INCR counter of the item change feed
* ``P item:<item_id>``       hash: text fields, ``content`` (JSON: modality ->
  [dtype, shape]), ``vec:<modality>`` (raw little-endian bytes, never a pickle) and
  ``picture`` (a WebP thumbnail, when the item has an image)
* ``P items``                set of registered item ids (start-up replay)
* ``P changes``              sorted set, score = seq, member = ``u<item_id>`` (upsert) or
  ``d<item_id>`` (delete); only an item's newest change is kept (see app/store/sqlite.py
  for why a compacted feed is enough for followers)
* ``P hist:<domain>:<user>`` list, oldest first, trimmed with LTRIM; the domain is
  percent-encoded so it holds no ``:`` and the key cannot be confused with another pair
* ``P histts:<domain>:<user>`` the rows' timestamps, pushed and trimmed with ``hist`` in
  the same MULTI (so the two lists stay aligned from their newest end)
* ``P interactions``         INCRBY counter of interactions ever appended
* ``P user:<user_id>``       set of domains the user has history in (get_history)
* ``P pop:<domain>``         hash item_id -> number of distinct users who interacted
* ``P popusers:<domain>``    set of ``<item_id>\\0<user_id>`` pairs already counted in pop
* ``P popitems:<user_id>``   the same pairs per user, as ``<domain>\\0<item_id>`` (erasure
  finds the counts a user added to without scanning every pair)
* ``P erased``               hash user_id -> time of its latest erasure (app/erasure.py)
* ``P bundle``               hash: ``version``, ``announced_at`` (the bundle version
  replicas should serve; one HSET, so both fields change together)
* ``P idem:<key>``           an Idempotency-Key record (``SET NX PX``, expires with its
  TTL): a JSON line (fingerprint, token, status) then the answer body

Atomicity: item writes are Lua scripts (they need the INCR result inside the same atomic
step); interaction batches are one MULTI/EXEC; a user erasure is one Lua script. Durability of an acknowledged write is the
server's: run Redis with ``appendonly yes`` and ``appendfsync always`` (the constructor logs
a warning when the server says otherwise).

Failures: connection errors, timeouts and "server cannot serve" replies (LOADING, MISCONF,
READONLY, OOM...) become :class:`StoreUnavailable`. Socket timeouts are short and the client
does not retry: a retried write whose first attempt did run would be applied twice
(HINCRBY, RPUSH), and the service's answer to a failed write is 503 + Retry-After anyway.
No restart is needed when Redis comes back: the connection pool drops sockets the server
closed and reconnects on the next call.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.store import paging
from app.store.base import (
    IdempotencyRecord,
    Interaction,
    ItemChange,
    Store,
    StoredItem,
    StoreUnavailable,
    UserRead,
    WantedBundle,
    pack_vector,
    unpack_vector,
)
from app.store.redis_async import AsyncUserReader

log = logging.getLogger(__name__)

# Replies meaning "the server is there but cannot serve now", i.e. retry later. redis-py
# maps some codes to classes (LOADING is a ConnectionError subclass already); the others
# stay plain ResponseErrors whose message starts with the code, or, inside a pipeline,
# carries it after "... of pipeline caused error: ".
_UNAVAILABLE_CLASSES: tuple[type[Exception], ...] = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
_UNAVAILABLE_CODES = re.compile(r"(?:^|error: )(?:MISCONF|MASTERDOWN|BUSY|CLUSTERDOWN)\b")

_TEXT_FIELDS = ("domain", "title", "categories", "description")

# KEYS: seq, item hash, items set, changes zset. ARGV: item id, then hash field/value pairs.
_PUT = """
local seq = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], 'd' .. ARGV[1])
redis.call('ZADD', KEYS[4], seq, 'u' .. ARGV[1])
return seq
"""

# KEYS: seq, item hash, items set, changes zset. ARGV: item id. Returns nil when missing.
_COUNT_NEW_PAIRS = """
-- KEYS: popusers set, pop hash; ARGV: item, user, item, user, ...
-- Counts each (item, user) pair once; returns the items whose count went up (per pair).
local new = {}
for k = 1, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[k] .. '\\0' .. ARGV[k + 1]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[k], 1)
    new[#new + 1] = ARGV[k]
  end
end
return new
"""

# KEYS: the idempotency key. ARGV: our claim's value, the new value ('' = delete), TTL ms.
# Acts only while our claim holds the key (or, for a completion, nothing does).
_SETTLE_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '' then
  if cur == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 1
end
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: the user's domain set, the user's pair set (popitems), the erased hash, then per
# domain (in ARGV order): history list, popusers set, pop hash; then per domain the
# history's timestamp list. ARGV: user id, erased_at,
# then the user's domains as the caller read them; false = they changed since (retry).
# Pairs are found through popitems and, for pairs counted before popitems existed, through
# the history lists (a pair trimmed from those before then stays counted).
_ERASE = """
local n = #ARGV - 2
if redis.call('SCARD', KEYS[1]) ~= n then return false end
local index = {}
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i + 2]) == 0 then return false end
  index[ARGV[i + 2]] = i
end
local out = {}
local function uncount(i, item)
  local base = 3 * i
  if redis.call('SREM', KEYS[base + 2], item .. '\\0' .. ARGV[1]) == 1 then
    if redis.call('HINCRBY', KEYS[base + 3], item, -1) <= 0 then
      redis.call('HDEL', KEYS[base + 3], item)
    end
    out[#out + 1] = ARGV[i + 2]
    out[#out + 1] = item
  end
end
for _, pair in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local sep = string.find(pair, '\\0', 1, true)
  local i = index[string.sub(pair, 1, sep - 1)]
  if i then uncount(i, string.sub(pair, sep + 1)) end
end
for i = 1, n do
  for _, item in ipairs(redis.call('LRANGE', KEYS[3 * i + 1], 0, -1)) do uncount(i, item) end
  redis.call('DEL', KEYS[3 * i + 1], KEYS[3 + 3 * n + i])
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return out
"""

_DELETE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
local seq = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], 'u' .. ARGV[1])
redis.call('ZADD', KEYS[4], seq, 'd' .. ARGV[1])
return seq
"""


# redis-py's annotations cover both decode_responses modes; with False every reply is
# bytes, so replies are handled as Any and decoded explicitly.
def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore(Store):
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
        self.url = url
        self.prefix = prefix
        self._r = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            # No automatic retries: see the module docstring (double-applied writes).
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            decode_responses=False,
            max_connections=max_connections,
        )
        self._put = self._r.register_script(_PUT)
        self._delete = self._r.register_script(_DELETE)
        self._settle = self._r.register_script(_SETTLE_CLAIM)
        self._erase = self._r.register_script(_ERASE)
        self._k_seq = f"{prefix}seq"
        self._k_items = f"{prefix}items"
        self._k_changes = f"{prefix}changes"
        self._k_erased = f"{prefix}erased"
        self._k_count = f"{prefix}interactions"
        self._k_bundle = f"{prefix}bundle"
        self._aio = AsyncUserReader(
            url,
            timeout_s=socket_timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )
        self._warn_if_not_durable()

    # --- keys ------------------------------------------------------------------------
    def _k_item(self, item_id: str) -> str:
        return f"{self.prefix}item:{item_id}"

    def _k_hist(self, user_id: str, domain: str) -> str:
        return f"{self.prefix}hist:{quote(domain, safe='')}:{user_id}"

    def _k_hist_ts(self, user_id: str, domain: str) -> str:
        return f"{self.prefix}histts:{quote(domain, safe='')}:{user_id}"

    def _k_user(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def _k_pop(self, domain: str) -> str:
        return f"{self.prefix}pop:{domain}"

    def _k_pop_users(self, domain: str) -> str:
        return f"{self.prefix}popusers:{domain}"

    def _k_pop_items(self, user_id: str) -> str:
        return f"{self.prefix}popitems:{user_id}"

    def _k_idem(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"

    # --- errors ------------------------------------------------------------------------
    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise StoreUnavailable(f"redis {self._where()}: {err}") from err
        except redis.ResponseError as err:
            if isinstance(err, _UNAVAILABLE_CLASSES) or _UNAVAILABLE_CODES.search(str(err)):
                raise StoreUnavailable(f"redis {self._where()}: {err}") from err
            raise

    def _where(self) -> str:
        kw = self._r.connection_pool.connection_kwargs
        if "path" in kw:
            return str(kw["path"])
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def _warn_if_not_durable(self) -> None:
        """Log when the server would lose acknowledged writes on a crash (best effort:
        CONFIG may be disabled on managed Redis, and the server may be down now)."""
        try:
            cfg: Any = self._r.config_get("append*")
        except redis.RedisError:
            return
        conf = {_s(k): _s(v) for k, v in cfg.items()}
        if conf.get("appendonly") != "yes" or conf.get("appendfsync") != "always":
            log.warning(
                "redis %s: appendonly=%s appendfsync=%s; acknowledged writes can be lost on a"
                " crash (use appendonly yes + appendfsync always)",
                self._where(),
                conf.get("appendonly"),
                conf.get("appendfsync"),
            )

    def ping(self) -> bool:
        try:
            with self._errors():
                return bool(self._r.ping())
        except (StoreUnavailable, redis.RedisError):
            return False

    def close(self) -> None:
        self._r.close()
        self._r.connection_pool.disconnect()

    # --- items -------------------------------------------------------------------------
    def _item_keys(self, item_id: str) -> list[str]:
        return [self._k_seq, self._k_item(item_id), self._k_items, self._k_changes]

    def put_item(self, item: StoredItem) -> int:
        fields: list[Any] = []
        for name in _TEXT_FIELDS:
            fields += [name, getattr(item, name)]
        # repr() of a float is its shortest exact decimal form: round trips bit-exactly.
        fields += ["created_at", repr(float(item.created_at))]
        fields += ["updated_at", repr(float(item.updated_at))]
        meta: dict[str, list[Any]] = {}
        for modality, vector in item.content.items():
            dtype, shape, data = pack_vector(vector)
            meta[modality] = [dtype, list(shape)]
            fields += [f"vec:{modality}", data]
        fields += ["content", json.dumps(meta)]
        if item.picture is not None:
            fields += ["picture", item.picture]
        with self._errors():
            seq = self._put(keys=self._item_keys(item.item_id), args=[item.item_id, *fields])
        return int(seq)

    @staticmethod
    def _decode_item(item_id: str, h: dict[bytes, bytes]) -> StoredItem:
        item = StoredItem(
            item_id=item_id,
            domain=h[b"domain"].decode(),
            title=h[b"title"].decode(),
            categories=h[b"categories"].decode(),
            description=h[b"description"].decode(),
            created_at=float(h[b"created_at"]),
            updated_at=float(h[b"updated_at"]),
            picture=h.get(b"picture"),
        )
        for modality, (dtype, shape) in json.loads(h[b"content"]).items():
            item.content[modality] = unpack_vector(dtype, shape, h[f"vec:{modality}".encode()])
        return item

    def get_item(self, item_id: str) -> StoredItem | None:
        with self._errors():
            h: Any = self._r.hgetall(self._k_item(item_id))
        return self._decode_item(item_id, h) if h else None

    def delete_item(self, item_id: str) -> int | None:
        with self._errors():
            seq = self._delete(keys=self._item_keys(item_id), args=[item_id])
        return None if seq is None else int(seq)

    def list_items(self, *, batch: int = 500) -> list[StoredItem]:
        with self._errors():
            ids = sorted(_s(m) for m in self._r.smembers(self._k_items))
            out: list[StoredItem] = []
            for start in range(0, len(ids), batch):
                chunk = ids[start : start + batch]
                pipe = self._r.pipeline(transaction=True)
                for item_id in chunk:
                    pipe.hgetall(self._k_item(item_id))
                hashes = pipe.execute()
                # An item deleted since SMEMBERS has an empty hash: it is simply not listed.
                out += [self._decode_item(i, h) for i, h in zip(chunk, hashes, strict=True) if h]
        return out

    def item_changes(self, after_seq: int, limit: int = 1000) -> list[ItemChange]:
        with self._errors():
            rows: Any = self._r.zrangebyscore(
                self._k_changes, f"({int(after_seq)}", "+inf", start=0, num=limit, withscores=True
            )
        out = []
        for member, score in rows:
            m = _s(member)
            out.append(ItemChange(seq=int(score), item_id=m[1:], deleted=m[0] == "d"))
        return out

    # --- interactions ------------------------------------------------------------------
    def add_interactions(
        self, rows: Sequence[Interaction], history_cap: int
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
            key, ts_key = self._k_hist(user_id, domain), self._k_hist_ts(user_id, domain)
            pipe.rpush(key, *[r.item_id for r in group])
            pipe.ltrim(key, -history_cap, -1)
            pipe.rpush(ts_key, *[repr(float(r.timestamp)) for r in group])
            pipe.ltrim(ts_key, -history_cap, -1)
            pipe.sadd(self._k_user(user_id), domain)
        pipe.incrby(self._k_count, len(rows))
        for user_id, domain_items in user_pairs.items():
            pipe.sadd(self._k_pop_items(user_id), *domain_items)
        for domain, args in pairs.items():
            keys = [self._k_pop_users(domain), self._k_pop(domain)]
            pipe.eval(_COUNT_NEW_PAIRS, len(keys), *keys, *args)
        with self._errors():
            results = pipe.execute()
        counts: Counter[tuple[str, str]] = Counter()
        for domain, new_items in zip(pairs, results[-len(pairs) :], strict=True):
            for item in new_items:
                counts[(domain, _s(item))] += 1
        return dict(counts)

    def get_history(self, user_id: str) -> dict[str, list[str]]:
        with self._errors():
            domains = sorted(_s(d) for d in self._r.smembers(self._k_user(user_id)))
            if not domains:
                return {}
            pipe = self._r.pipeline(transaction=True)
            for domain in domains:
                pipe.lrange(self._k_hist(user_id, domain), 0, -1)
            lists = pipe.execute()
        return {d: [_s(i) for i in items] for d, items in zip(domains, lists, strict=True)}

    def read_user(self, user_id: str, domains: Sequence[str]) -> UserRead:
        keys = [self._k_hist(user_id, d) for d in domains]
        with self._errors():
            pipe = self._r.pipeline(transaction=True)  # one round trip, one instant
            pipe.hexists(self._k_erased, user_id)
            for key in keys:
                pipe.lrange(key, 0, -1)
            replies = pipe.execute()
        return self._user_read(domains, replies[0], replies[1:])

    async def read_user_async(self, user_id: str, domains: Sequence[str]) -> UserRead:
        keys = [self._k_hist(user_id, d) for d in domains]
        with self._errors():
            erased, lists = await self._aio.read(self._k_erased, user_id, keys)
        return self._user_read(domains, erased, lists)

    @staticmethod
    def _user_read(domains: Sequence[str], erased: Any, lists: list[Any]) -> UserRead:
        history = {
            d: [i.decode() for i in ids] for d, ids in zip(domains, lists, strict=True) if ids
        }
        return UserRead(bool(erased), history)

    def popularity(self, domain: str) -> dict[str, int]:
        with self._errors():
            h: Any = self._r.hgetall(self._k_pop(domain))
        return {_s(k): int(v) for k, v in h.items()}

    # --- export (paged reads: app/store/paging.py) ---------------------------------------
    def iter_interactions(self, batch: int = 1000) -> Iterator[Interaction]:
        return paging.redis_interactions(self, batch)

    def iter_items(self, batch: int = 500) -> Iterator[StoredItem]:
        return paging.redis_items(self, batch)

    def interaction_count(self) -> int:
        with self._errors():
            value: Any = self._r.get(self._k_count)
        return int(value or 0)

    # --- user erasure ------------------------------------------------------------------
    def erase_user(self, user_id: str, erased_at: float) -> dict[tuple[str, str], int]:
        with self._errors():
            # The script needs every key it touches up front, so the user's domains are read
            # first; it refuses (None) when a concurrent write added one meanwhile.
            for _ in range(10):
                domains = sorted(_s(d) for d in self._r.smembers(self._k_user(user_id)))
                keys = [self._k_user(user_id), self._k_pop_items(user_id), self._k_erased]
                for domain in domains:
                    keys += [
                        self._k_hist(user_id, domain),
                        self._k_pop_users(domain),
                        self._k_pop(domain),
                    ]
                keys += [self._k_hist_ts(user_id, domain) for domain in domains]
                args = [user_id, repr(float(erased_at)), *domains]
                out = self._erase(keys=keys, args=args)
                if out is not None:
                    return {(_s(d), _s(i)): 1 for d, i in zip(out[::2], out[1::2], strict=True)}
        raise StoreUnavailable(f"redis {self._where()}: user {user_id!r} keeps changing")

    def is_erased(self, user_id: str) -> bool:
        with self._errors():
            return bool(self._r.hexists(self._k_erased, user_id))

    def erased_users(self) -> dict[str, float]:
        with self._errors():
            h: Any = self._r.hgetall(self._k_erased)
        return {_s(u): float(t) for u, t in h.items()}

    # --- bundle version ----------------------------------------------------------------
    def set_bundle_version(self, version: str, announced_at: float) -> None:
        with self._errors():
            self._r.hset(
                self._k_bundle, mapping={"version": version, "announced_at": repr(announced_at)}
            )

    def get_bundle_version(self) -> WantedBundle | None:
        with self._errors():
            h: Any = self._r.hgetall(self._k_bundle)
        if not h:
            return None
        return WantedBundle(_s(h[b"version"]), float(h[b"announced_at"]))

    # --- idempotency keys --------------------------------------------------------------
    @staticmethod
    def _encode_record(record: IdempotencyRecord) -> bytes:
        head = json.dumps([record.fingerprint, record.token, record.status])  # one line
        return head.encode() + b"\n" + record.body

    @staticmethod
    def _decode_record(value: bytes) -> IdempotencyRecord:
        head, _, body = value.partition(b"\n")
        fingerprint, token, status = json.loads(head)
        return IdempotencyRecord(fingerprint, token, int(status), body)

    def claim_idempotency_key(
        self, key: str, claim: IdempotencyRecord, ttl_s: float
    ) -> IdempotencyRecord | None:
        ttl_ms = max(1, int(ttl_s * 1000))
        with self._errors():
            # A record found by SET NX may expire before the GET: then claim again.
            for _ in range(3):
                if self._r.set(self._k_idem(key), self._encode_record(claim), nx=True, px=ttl_ms):
                    return None
                found: Any = self._r.get(self._k_idem(key))
                if found is not None:
                    return self._decode_record(found)
        raise StoreUnavailable(f"redis {self._where()}: idempotency key {key!r} keeps expiring")

    def complete_idempotency_key(
        self, key: str, claim: IdempotencyRecord, answer: IdempotencyRecord, ttl_s: float
    ) -> bool:
        args: list[bytes | int] = [
            self._encode_record(claim),
            self._encode_record(answer),
            max(1, int(ttl_s * 1000)),
        ]
        with self._errors():
            return bool(self._settle(keys=[self._k_idem(key)], args=args))

    def release_idempotency_key(self, key: str, claim: IdempotencyRecord) -> None:
        with self._errors():
            self._settle(keys=[self._k_idem(key)], args=[self._encode_record(claim), b"", 0])
