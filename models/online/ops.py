"""The online features' Redis operations, run in batches: one script call carries many.

Every operation touches the keys of one hash tag (one card, merchant, device or transaction).
``run`` sends a whole batch of them as one ``EVALSHA`` of the dispatcher below on a single
Redis, or one per slot on a Redis Cluster (pipelined, each node receiving its share): the
client's cost per operation is then a few list entries, not a command of its own, and each
operation stays atomic. A node that lost the script (restarted, failed over) gets it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from services.core.settings import AsyncRedisClient, RedisClient

DISPATCH: Final = """
-- ARGV, per operation: its name, its key count, its argument count, its arguments.
-- KEYS: every operation's keys, in order. Returns one reply per operation.
-- An operation reads its keys as KEYS[k + 1], ... and its arguments as ARGV[a + 1], ... .
local ops = {}
function ops.read_card(k, a, n)  -- state, seen, blocked, recent; the batch's digests of it
  local counted = redis.call('ZMSCORE', KEYS[k + 2], unpack(ARGV, a + 1, a + n))
  local rows = {}  -- the row a counted id was decided with, while the card keeps it
  for i, score in ipairs(counted) do
    rows[i] = score and redis.call('HGET', KEYS[k + 4], ARGV[a + i])
  end
  return {redis.call('GET', KEYS[k + 1]), counted, redis.call('EXISTS', KEYS[k + 3]), rows}
end
function ops.exists(k, a, n)
  return redis.call('EXISTS', KEYS[k + 1])
end
function ops.merchant_days(k, a, n)  -- days hash; the latest day wanted, how many days back
  local fields, last = {}, tonumber(ARGV[a + 1])
  for i = 0, tonumber(ARGV[a + 2]) - 1 do
    fields[2 * i + 1] = 'n' .. (last - i)
    fields[2 * i + 2] = 'f' .. (last - i)
  end
  return redis.call('HMGET', KEYS[k + 1], unpack(fields))
end
function ops.commit_card(k, a, n)  -- state, seen, recent; TTL, trim score ('' on the same
  local ttl = ARGV[a + 1]  -- day: not yet), state, the rows' TTL, then the rows to keep (a
  redis.call('SET', KEYS[k + 1], ARGV[a + 3], 'PX', ttl)  -- count, then digest, row pairs),
  local at = a + 6  -- the rows to forget (a count, then digests), then (score, digest) per
  local keep = tonumber(ARGV[a + 5])  -- counted id
  if keep > 0 then
    redis.call('HSET', KEYS[k + 3], unpack(ARGV, at, at + 2 * keep - 1))
    redis.call('PEXPIRE', KEYS[k + 3], ARGV[a + 4])
  end
  at = at + 2 * keep
  local forget = tonumber(ARGV[at])
  if forget > 0 then redis.call('HDEL', KEYS[k + 3], unpack(ARGV, at + 1, at + forget)) end
  redis.call('ZADD', KEYS[k + 2], 'NX', unpack(ARGV, at + forget + 1, a + n))
  if ARGV[a + 2] ~= '' then  -- once a day per card: forget ids past the history
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 2], '-inf', ARGV[a + 2])
    redis.call('PEXPIRE', KEYS[k + 2], ttl)
  end
  return 1
end
function ops.count_merchant(k, a, n)  -- days hash; TTL, oldest day kept, field cap, then
  local key = KEYS[k + 1]  -- (day, count) pairs
  for i = a + 4, a + n, 2 do
    if redis.call('HINCRBY', key, 'n' .. ARGV[i], ARGV[i + 1]) == tonumber(ARGV[i + 1]) then
      redis.call('PEXPIRE', key, ARGV[a + 1])  -- a new day: keep the hash, drop stale days
      if redis.call('HLEN', key) > tonumber(ARGV[a + 3]) then
        for _, field in ipairs(redis.call('HKEYS', key)) do
          if tonumber(string.sub(field, 2)) < tonumber(ARGV[a + 2]) then
            redis.call('HDEL', key, field)
          end
        end
      end
    end
  end
  return 1
end
function ops.record_label(k, a, n)  -- label marker, merchant days; label, fraud field, TTL,
  local label, at = ARGV[a + 1], tonumber(ARGV[a + 4])  -- the disposition's time. The marker
  local old, old_at, old_label = redis.call('GET', KEYS[k + 1]), -1, nil  -- is "time:label"
  if old then
    local sep = string.find(old, ':', 1, true)
    old_at, old_label = tonumber(string.sub(old, 1, sep - 1)), string.sub(old, sep + 1)
  end
  if at < old_at then return -1 end  -- an older disposition than the one counted: superseded
  redis.call('SET', KEYS[k + 1], at .. ':' .. label, 'PX', ARGV[a + 3])
  if old_label == label then return 0 end
  if label == 'fraud' then
    redis.call('HINCRBY', KEYS[k + 2], ARGV[a + 2], 1)
  elseif old_label == 'fraud' then
    redis.call('HINCRBY', KEYS[k + 2], ARGV[a + 2], -1)
  end
  redis.call('PEXPIRE', KEYS[k + 2], ARGV[a + 3])
  return 1
end
function ops.get(k, a, n)
  return redis.call('GET', KEYS[k + 1])
end
-- An entity value's state: msgpack {first, last, buckets per tier {keys, counts, sums, maxima},
-- card idents, card times}; add_event is models.features.entities.add, step for step.
local TIERS = {{600000, 6}, {3600000, 24}, {86400000, 30}}
local HISTORY_MS = 2592000000
local function drop_first(column, cut)
  local kept = {}
  for x = cut + 1, #column do kept[#kept + 1] = column[x] end
  return kept
end
local function add_event(s, t, amount, card, cards_kept)
  if s[2] >= 0 and t <= s[2] - HISTORY_MS then return end  -- too late to count
  if s[2] >= 0 and t - s[2] >= HISTORY_MS + 86400000 then  -- expired: forgotten
    s[1], s[2], s[4], s[5] = -1, -1, {}, {}
    s[3] = {{{}, {}, {}, {}}, {{}, {}, {}, {}}, {{}, {}, {}, {}}}
  end
  if t > s[2] then
    for ti, tier in ipairs(TIERS) do
      local b, stale, cut = s[3][ti], math.floor(t / tier[1]) - tier[2], 0
      while cut < #b[1] and b[1][cut + 1] <= stale do cut = cut + 1 end
      if cut > 0 then for c = 1, 4 do b[c] = drop_first(b[c], cut) end end
    end
    s[2] = t
    local cut = 0
    while cut < #s[5] and s[5][cut + 1] <= t - HISTORY_MS do cut = cut + 1 end
    if cut > 0 then s[4], s[5] = drop_first(s[4], cut), drop_first(s[5], cut) end
  end
  if s[1] < 0 or t < s[1] then s[1] = t end
  for ti, tier in ipairs(TIERS) do
    local key = math.floor(t / tier[1])
    if key > math.floor(s[2] / tier[1]) - tier[2] then
      local b = s[3][ti]
      local i = 1
      while i <= #b[1] and b[1][i] < key do i = i + 1 end
      if b[1][i] == key then
        b[2][i], b[3][i] = b[2][i] + 1, b[3][i] + amount
        if amount > b[4][i] then b[4][i] = amount end
      else
        table.insert(b[1], i, key); table.insert(b[2], i, 1)
        table.insert(b[3], i, amount); table.insert(b[4], i, amount)
      end
    end
  end
  for x = 1, #s[4] do  -- the cards, ordered by when last seen (models.features.entities._use)
    if s[4][x] == card then
      if s[5][x] >= t then return end
      table.remove(s[4], x); table.remove(s[5], x)
      break
    end
  end
  local at = #s[5] + 1
  while at > 1 and s[5][at - 1] > t do at = at - 1 end
  table.insert(s[4], at, card); table.insert(s[5], at, t)
  if #s[4] > cards_kept then table.remove(s[4], 1); table.remove(s[5], 1) end
end
function ops.commit_entity(k, a, n)  -- state, seen; TTL, job clock, seen kept since, seen cap,
  local key, seen = KEYS[k + 1], KEYS[k + 2]  -- cards kept, seen TTL, msgpack events {digest,
  local events, digests = cmsgpack.unpack(ARGV[a + 7]), {}  -- time, amount, card}: each once
  for e, event in ipairs(events) do digests[e] = event[1] end  -- however often replayed
  local counted = redis.call('ZMSCORE', seen, unpack(digests))
  local blob = redis.call('GET', key)
  local s = blob and cmsgpack.unpack(blob)
    or {-1, -1, {{{}, {}, {}, {}}, {{}, {}, {}, {}}, {{}, {}, {}, {}}}, {}, {}}
  local fresh, done = {}, {}
  for e, digest in ipairs(digests) do
    if not counted[e] and not done[digest] then
      done[digest] = true
      fresh[#fresh + 1], fresh[#fresh + 2] = ARGV[a + 2], digest
      local event = events[e]
      add_event(s, event[2], event[3], event[4], tonumber(ARGV[a + 5]))
    end
  end
  if #fresh == 0 then return 0 end
  redis.call('SET', key, cmsgpack.pack(s), 'PX', ARGV[a + 1])
  redis.call('ZADD', seen, unpack(fresh))
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. ARGV[a + 3])
  local extra = redis.call('ZCARD', seen) - tonumber(ARGV[a + 4])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', seen, 0, extra - 1) end
  redis.call('PEXPIRE', seen, ARGV[a + 6])
  return 1
end
function ops.delete_if(k, a, n)  -- a key; the value it must still hold
  if redis.call('GET', KEYS[k + 1]) == ARGV[a + 1] then return redis.call('DEL', KEYS[k + 1]) end
  return 0
end
local out, k, at = {}, 0, 1
while at <= #ARGV do
  local nkeys, nargs = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  out[#out + 1] = ops[ARGV[at]](k, at + 2, nargs)
  k, at = k + nkeys, at + 3 + nargs
end
return out
"""
_SHA: Final = hashlib.sha1(DISPATCH.encode()).hexdigest()
OPS_PER_CALL: Final = 256  # a call holds Redis for its length: keep each one short


# Replies that say Redis cannot serve now (loading, failing over, out of memory, a script
# running too long, no permission for this client), not that the request is wrong. redis-py
# turns most into classes (and strips the code); inside a script's error they stay text.
_OUTAGES: Final = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
                   redis.exceptions.ClusterError, redis.exceptions.TryAgainError,
                   redis.exceptions.NoPermissionError)  # fmt: skip
_TRANSIENT_REPLIES: Final = ("LOADING", "BUSY", "READONLY", "MASTERDOWN", "CLUSTERDOWN",
                             "TRYAGAIN", "NOREPLICAS", "OOM", "NOPERM")  # fmt: skip


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is an outage to retry (connection, timeout, a failover, Redis full)
    rather than a reply that will be the same next time (a wrong type, a script error): only
    the former may be waited out; the latter belongs to the data that caused it."""
    if isinstance(error, _OUTAGES):
        return True
    if isinstance(error, redis.exceptions.ResponseError):
        text = str(error)
        return any(reply in text for reply in _TRANSIENT_REPLIES)
    if isinstance(error, redis.exceptions.DataError):  # what this client could not encode
        return False
    return isinstance(error, (redis.exceptions.RedisError, OSError, RedisClusterException))


_Call = tuple[list[int], tuple[Any, ...]]  # (operation indexes, EVALSHA arguments)


class Op(NamedTuple):
    name: str
    keys: tuple[str, ...]
    args: tuple[Any, ...] = ()


def run(client: RedisClient, ops: Sequence[Op]) -> list[Any]:
    """Every operation's reply, in order; raises the first error of any call."""
    if not ops:
        return []
    calls = _calls(ops, cluster=isinstance(client, RedisCluster))
    replies = _pipeline(client, calls)
    lost = _lost(replies)
    if lost:
        client.script_load(DISPATCH)  # on every primary of a cluster
        for i, reply in zip(lost, _pipeline(client, [calls[i] for i in lost]), strict=True):
            replies[i] = reply
    return _replies(len(ops), calls, replies)


async def run_async(client: AsyncRedisClient, ops: Sequence[Op]) -> list[Any]:
    """:func:`run` on an asyncio client (the feedback app: never blocks its event loop)."""
    if not ops:
        return []
    calls = _calls(ops, cluster=isinstance(client, AsyncRedisCluster))
    replies = await _pipeline_async(client, calls)
    lost = _lost(replies)
    if lost:
        await client.script_load(DISPATCH)
        again = await _pipeline_async(client, [calls[i] for i in lost])
        for i, reply in zip(lost, again, strict=True):
            replies[i] = reply
    return _replies(len(ops), calls, replies)


def _lost(replies: list[Any]) -> list[int]:
    """The calls whose node did not have the script (restarted, failed over)."""
    return [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]


def _replies(count: int, calls: list[_Call], replies: list[Any]) -> list[Any]:
    out: list[Any] = [None] * count
    for (indexes, _), reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            raise reply
        for i, value in zip(indexes, reply, strict=True):
            out[i] = value
    return out


def _calls(ops: Sequence[Op], cluster: bool) -> list[_Call]:
    """(operation indexes, EVALSHA arguments) per call: per slot on a cluster, else by count."""
    groups: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        groups.setdefault(key_slot(op.keys[0].encode()) if cluster else 0, []).append(i)
    calls = []
    for indexes in groups.values():
        for start in range(0, len(indexes), OPS_PER_CALL):
            chunk = indexes[start : start + OPS_PER_CALL]
            keys = [key for i in chunk for key in ops[i].keys]
            argv = [item for i in chunk for item in
                    (ops[i].name, len(ops[i].keys), len(ops[i].args), *ops[i].args)]  # fmt: skip
            calls.append((chunk, ("EVALSHA", _SHA, len(keys), *keys, *argv)))
    return calls


def _pipeline(client: RedisClient, calls: list[_Call]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for _, command in calls:
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))


async def _pipeline_async(client: AsyncRedisClient, calls: list[_Call]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for _, command in calls:
        pipe.execute_command(*command)
    return list(await pipe.execute(raise_on_error=False))
