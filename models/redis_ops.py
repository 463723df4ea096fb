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
function ops.read_entity(k, a, n)  -- state hash, cards
  return {redis.call('HGETALL', KEYS[k + 1]),
          redis.call('ZRANGE', KEYS[k + 2], 0, -1, 'WITHSCORES')}
end
local TIERS = {{'q', 600000, 6}, {'h', 3600000, 24}, {'d', 86400000, 30}}
local HISTORY_MS = 2592000000
function ops.commit_entity(k, a, n)  -- state, cards, seen; TTL, job clock, seen kept since,
  local h, cards, seen = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]  -- seen cap, cards cap, then
  local now, cap, kept_cards = ARGV[a + 2], tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local last = tonumber(redis.call('HGET', h, 'last') or '-1')  -- (digest, time, micro-USD,
  local first = tonumber(redis.call('HGET', h, 'first') or '-1')  -- card) per event: as
  for i = a + 6, a + n, 4 do  -- models.entities.add, each event once
    local t, amount = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if redis.call('ZADD', seen, 'NX', now, ARGV[i]) == 1
        and not (last >= 0 and t <= last - HISTORY_MS) then
      if t > last then
        for _, tier in ipairs(TIERS) do
          local w, kept = tier[2], tier[3]
          local old_top, new_top = math.floor(last / w), math.floor(t / w)
          if last >= 0 then
            for key = old_top - kept + 1, math.min(new_top - kept, old_top) do
              redis.call('HDEL', h, tier[1] .. string.format('%d', key))
            end
          end
        end
        last = t
        redis.call('ZREMRANGEBYSCORE', cards, '-inf', string.format('%d', t - HISTORY_MS))
      end
      if first < 0 or t < first then first = t end
      for _, tier in ipairs(TIERS) do
        local w, kept = tier[2], tier[3]
        local key = math.floor(t / w)
        if key > math.floor(last / w) - kept then
          local field = tier[1] .. string.format('%d', key)
          local old = redis.call('HGET', h, field)
          local c, s, m = 0, 0, 0
          if old then
            local x, y, z = string.match(old, '(%d+):(%d+):(%d+)')
            c, s, m = tonumber(x), tonumber(y), tonumber(z)
          end
          redis.call('HSET', h, field, string.format('%d:%d:%d', c + 1, s + amount,
                                                     math.max(m, amount)))
        end
      end
      redis.call('ZADD', cards, 'GT', ARGV[i + 1], ARGV[i + 3])
      if redis.call('ZCARD', cards) > kept_cards then redis.call('ZPOPMIN', cards, 1) end
    end
  end
  redis.call('HSET', h, 'last', string.format('%d', last), 'first', string.format('%d', first))
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. ARGV[a + 3])
  local extra = redis.call('ZCARD', seen) - cap
  if extra > 0 then redis.call('ZREMRANGEBYRANK', seen, 0, extra - 1) end
  for _, key in ipairs({h, cards, seen}) do redis.call('PEXPIRE', key, ARGV[a + 1]) end
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
