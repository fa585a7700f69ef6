"""How :class:`~app.store.redis.RedisStore` lays its data out on the server: the key names,
the Lua scripts that change several keys in one atomic step, and the encoding of the values.

Key layout (``P`` = ``prefix``; ids are the whole key suffix, so they may contain ``:``):

* ``P seq``                  INCR counter of the item change feed
* ``P item:<item_id>``       hash: text fields, ``content`` (JSON: modality ->
  [dtype, shape]), ``vec:<modality>`` (raw little-endian bytes, never a pickle) and
  ``picture`` (a WebP thumbnail, when the item has an image)
* ``P items``                set of registered item ids (start-up replay)
* ``P changes``              sorted set, score = seq, member = ``u<item_id>`` (upsert) or
  ``d<item_id>`` (delete); only an item's newest change is kept (see
  app/store/sqlite_items.py for why a compacted feed is enough for followers)
* ``P hist:<domain>:<user>`` list, oldest first, trimmed with LTRIM; the domain is
  percent-encoded so it holds no ``:`` and the key cannot be confused with another pair
* ``P histts:<domain>:<user>`` the rows' timestamps, pushed and trimmed with ``hist`` in
  the same MULTI (so the two lists stay aligned from their newest end)
* ``P interactions``         INCRBY counter of interactions ever appended
* ``P user:<user_id>``       set of domains the user has history in (get_history)
* ``P pop:<domain>``         hash item_id -> number of distinct users who interacted
* ``P popby:<domain>``       hash ``<item_id>\\0<user_id>`` -> the source (API-key
  pseudonym) whose rows counted the pair: the pairs already counted in pop
* ``P popusers:<domain>``    set of such pairs counted by older versions (no source); read
  and erased, never added to
* ``P popitems:<user_id>``   the pairs per user, as ``<domain>\\0<item_id>`` (erasure
  finds the counts a user added to without scanning every pair)
* ``P popsrc:<domain>``      hash ``<item_id>\\0<source>`` -> users that source counted
  for the item (what ``popularity_key_cap`` bounds)
* ``P erasures``             hash erasure pseudonym (app.store.base.erasure_key) -> time
  of the user's latest erasure (app/users/erasure.py); never the id
* ``P erased``               the same by user id in clear: written by older versions, still
  read, emptied as those users are erased again and by ``migrate_erasures``
* ``P purge``                INCR per erasure; deleted by the AOF rewrite that follows it
  (``RedisStore.purge_erased``)
* ``P purgelock``            ``SET NX PX``: one AOF rewrite per ``erasure_purge_interval_s``
  across every replica
* ``P idemusers:<user_id>``  set of the idempotency keys (``<key>``) of requests that named
  the user, expiring with the longest-lived of them; the user's erasure deletes those
* ``P bundle``               hash: ``version``, ``announced_at`` (the bundle version
  replicas should serve; one HSET, so both fields change together)
* ``P canary``               hash: ``version``, ``share``, ``salt``, ``started_at``,
  ``decided`` (the canary every replica serves to a share of users; ``DECIDE_CANARY``
  sets ``decided`` once, so one process acts on the decision)
* ``P idem:<key>``           an Idempotency-Key record (``SET NX PX``, expires with its
  TTL): a JSON line (fingerprint, token, status) then the answer body
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from app.store.base import IdempotencyRecord, StoredItem, pack_vector, unpack_vector

TEXT_FIELDS = ("domain", "title", "categories", "description")


class RedisKeys:
    """The key names under one ``prefix`` (see the module docstring for what each holds)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seq = f"{prefix}seq"
        self.items = f"{prefix}items"
        self.changes = f"{prefix}changes"
        self.erasures = f"{prefix}erasures"
        self.erased = f"{prefix}erased"  # older versions' records by id (still read)
        self.count = f"{prefix}interactions"
        self.bundle = f"{prefix}bundle"
        self.canary = f"{prefix}canary"
        self.purge = f"{prefix}purge"
        self.purge_lock = f"{prefix}purgelock"
        self.idem_prefix = f"{prefix}idem:"

    def item(self, item_id: str) -> str:
        return f"{self.prefix}item:{item_id}"

    def hist(self, user_id: str, domain: str) -> str:
        return f"{self.prefix}hist:{quote(domain, safe='')}:{user_id}"

    def hist_ts(self, user_id: str, domain: str) -> str:
        return f"{self.prefix}histts:{quote(domain, safe='')}:{user_id}"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def pop(self, domain: str) -> str:
        return f"{self.prefix}pop:{domain}"

    def pop_users(self, domain: str) -> str:
        return f"{self.prefix}popusers:{domain}"

    def pop_items(self, user_id: str) -> str:
        return f"{self.prefix}popitems:{user_id}"

    def pop_by(self, domain: str) -> str:
        return f"{self.prefix}popby:{domain}"

    def pop_sources(self, domain: str) -> str:
        return f"{self.prefix}popsrc:{domain}"

    def idem(self, key: str) -> str:
        return f"{self.idem_prefix}{key}"

    def idem_users(self, user_id: str) -> str:
        return f"{self.prefix}idemusers:{user_id}"

    def item_script(self, item_id: str) -> list[str]:
        """KEYS of :data:`PUT_ITEM` and :data:`DELETE_ITEM`."""
        return [self.seq, self.item(item_id), self.items, self.changes]

    def count_script(self, domain: str) -> list[str]:
        """KEYS of :data:`COUNT_NEW_PAIRS` for ``domain``."""
        return [
            self.pop_users(domain),
            self.pop(domain),
            self.pop_by(domain),
            self.pop_sources(domain),
        ]

    def erase_script(self, user_id: str, domains: list[str]) -> list[str]:
        """KEYS of :data:`ERASE_USER` for a user with history in ``domains``."""
        keys = [
            self.user(user_id),
            self.pop_items(user_id),
            self.erasures,
            self.erased,
            self.idem_users(user_id),
            self.purge,
        ]
        for domain in domains:
            keys += [
                self.hist(user_id, domain),
                self.pop_users(domain),
                self.pop(domain),
                self.pop_by(domain),
                self.pop_sources(domain),
            ]
        keys += [self.hist_ts(user_id, domain) for domain in domains]
        return keys


# --- Lua scripts: item writes need the INCR result inside the same atomic step ------------
# KEYS: seq, item hash, items set, changes zset. ARGV: item id, then hash field/value pairs.
PUT_ITEM = """
local seq = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], 'd' .. ARGV[1])
redis.call('ZADD', KEYS[4], seq, 'u' .. ARGV[1])
return seq
"""

# KEYS: seq, item hash, items set, changes zset. ARGV: item id. Returns nil when missing.
DELETE_ITEM = """
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
local seq = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], 'u' .. ARGV[1])
redis.call('ZADD', KEYS[4], seq, 'd' .. ARGV[1])
return seq
"""

COUNT_NEW_PAIRS = """
-- KEYS: popusers set (older versions' pairs), pop hash, popby hash, popsrc hash
-- (RedisKeys.count_script); ARGV: source, cap (0 = none), then item, user, item, user, ...
-- Counts each (item, user) pair once, and at most cap pairs per (item, source); returns
-- the items whose count went up (per pair).
local source, cap = ARGV[1], tonumber(ARGV[2])
local new = {}
for k = 3, #ARGV, 2 do
  local item = ARGV[k]
  local pair = item .. '\\0' .. ARGV[k + 1]
  local counted = item .. '\\0' .. source
  if redis.call('HEXISTS', KEYS[3], pair) == 0 and redis.call('SISMEMBER', KEYS[1], pair) == 0
      and (cap <= 0 or tonumber(redis.call('HGET', KEYS[4], counted) or '0') < cap) then
    redis.call('HSET', KEYS[3], pair, source)
    redis.call('HINCRBY', KEYS[2], item, 1)
    redis.call('HINCRBY', KEYS[4], counted, 1)
    new[#new + 1] = item
  end
end
return new
"""

# Files an idempotency key under the sets of the users its request named, each set living
# as long as its longest-lived record. Lua shared by CLAIM_KEY and SETTLE_CLAIM: KEYS[2..]
# the users' sets, ARGV[idx] the key, ttl in ms.
_FILE_UNDER_USERS = """
local function file_under_users(member, ttl)
  for i = 2, #KEYS do
    redis.call('SADD', KEYS[i], member)
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
"""

# KEYS: the idempotency key, then the named users' idemusers sets. ARGV: the claim's
# value, TTL ms, the key (as filed in the sets). Returns false when claimed, else the
# record found (the SET NX and the GET in one step: the record cannot expire between).
CLAIM_KEY = (
    _FILE_UNDER_USERS
    + """
local ttl = tonumber(ARGV[2])
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl) then
  file_under_users(ARGV[3], ttl)
  return false
end
return redis.call('GET', KEYS[1])
"""
)

# KEYS: the idempotency key, then the named users' idemusers sets. ARGV: our claim's
# value, the new value ('' = delete), TTL ms, the key (as filed in the sets). Acts only
# while our claim holds the key (or, for a completion, nothing does).
SETTLE_CLAIM = (
    _FILE_UNDER_USERS
    + """
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '' then
  if cur == ARGV[1] then
    redis.call('DEL', KEYS[1])
    for i = 2, #KEYS do redis.call('SREM', KEYS[i], ARGV[4]) end
  end
  return 1
end
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
file_under_users(ARGV[4], tonumber(ARGV[3]))
return 1
"""
)

# KEYS (RedisKeys.erase_script): the user's domain set, the user's pair set (popitems),
# the erasures hash, the legacy erased hash, the user's idemusers set, the purge counter;
# then per domain (in ARGV order): history list, popusers set (older pairs), pop hash, popby
# hash, popsrc hash; then per domain the history's timestamp list. ARGV: user id, erased_at, erasure
# pseudonym, idempotency key prefix, then the user's domains as the caller read them;
# false = they changed since (retry).
# Pairs are found through popitems and, for pairs counted before popitems existed, through
# the history lists (a pair trimmed from those before then stays counted).
ERASE_USER = """
local head, per = 6, 5
local n = #ARGV - 4
if redis.call('SCARD', KEYS[1]) ~= n then return false end
local index = {}
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i + 4]) == 0 then return false end
  index[ARGV[i + 4]] = i
end
local out = {}
local function uncount(i, item)
  local base = head + per * (i - 1)
  local pair = item .. '\\0' .. ARGV[1]
  local source = redis.call('HGET', KEYS[base + 4], pair)
  if source then
    redis.call('HDEL', KEYS[base + 4], pair)
    local counted = item .. '\\0' .. source
    if redis.call('HINCRBY', KEYS[base + 5], counted, -1) <= 0 then
      redis.call('HDEL', KEYS[base + 5], counted)
    end
  elseif redis.call('SREM', KEYS[base + 2], pair) == 0 then
    return  -- not counted (past its source's cap, or uncounted already)
  end
  if redis.call('HINCRBY', KEYS[base + 3], item, -1) <= 0 then
    redis.call('HDEL', KEYS[base + 3], item)
  end
  out[#out + 1] = ARGV[i + 4]
  out[#out + 1] = item
end
for _, pair in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local sep = string.find(pair, '\\0', 1, true)
  local i = index[string.sub(pair, 1, sep - 1)]
  if i then uncount(i, string.sub(pair, sep + 1)) end
end
for i = 1, n do
  local hist = KEYS[head + per * (i - 1) + 1]
  for _, item in ipairs(redis.call('LRANGE', hist, 0, -1)) do uncount(i, item) end
  redis.call('DEL', hist, KEYS[head + per * n + i])
end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('DEL', ARGV[4] .. key)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
redis.call('INCR', KEYS[6])
return out
"""

# KEYS: the purge counter. ARGV: the value a purge started from. Deletes the counter if no
# erasure came since (a later one needs a later rewrite).
CLEAR_PURGE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


# --- values ------------------------------------------------------------------------------
# redis-py's annotations cover both decode_responses modes; with False every reply is
# bytes, so replies are handled as Any and decoded explicitly.
def as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode_item(item: StoredItem) -> list[Any]:
    """The item hash's field/value pairs, flat (ARGV of :data:`PUT_ITEM` after the id)."""
    fields: list[Any] = []
    for name in TEXT_FIELDS:
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
    return fields


def decode_item(item_id: str, h: dict[bytes, bytes]) -> StoredItem:
    """Inverse of :func:`encode_item` (``h``: the HGETALL reply)."""
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


def encode_record(record: IdempotencyRecord) -> bytes:
    head = json.dumps([record.fingerprint, record.token, record.status])  # one line
    return head.encode() + b"\n" + record.body


def decode_record(value: bytes) -> IdempotencyRecord:
    head, _, body = value.partition(b"\n")
    fingerprint, token, status = json.loads(head)
    return IdempotencyRecord(fingerprint, token, int(status), body)


DECIDE_CANARY = """
if redis.call('HGET', KEYS[1], 'salt') == ARGV[1] and redis.call('HGET', KEYS[1], 'decided') == '' then
  redis.call('HSET', KEYS[1], 'decided', ARGV[2])
  return 1
end
return 0
"""
"""KEYS: canary hash; ARGV: salt, outcome. 1 when this call recorded the decision."""
