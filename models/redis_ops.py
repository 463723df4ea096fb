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
from redis.cluster import RedisCluster
from redis.crc import key_slot

from services.core.settings import RedisClient

DISPATCH: Final = """
-- ARGV, per operation: its name, its key count, its argument count, its arguments.
-- KEYS: every operation's keys, in order. Returns one reply per operation.
local ops = {}
function ops.read_card(k, a)  -- state, seen, blocked; the batch's digests of this card
  return {redis.call('GET', k[1]), redis.call('ZMSCORE', k[2], unpack(a)),
          redis.call('EXISTS', k[3])}
end
function ops.exists(k, a)
  return redis.call('EXISTS', k[1])
end
function ops.merchant_days(k, a)  -- days hash; the latest day wanted, how many days back
  local fields, last = {}, tonumber(a[1])
  for i = 0, tonumber(a[2]) - 1 do
    fields[#fields + 1] = 'n' .. (last - i)
    fields[#fields + 1] = 'f' .. (last - i)
  end
  return redis.call('HMGET', k[1], unpack(fields))
end
function ops.commit_card(k, a)  -- state, seen; TTL, trim score ('' on the same day: not
  redis.call('SET', k[1], a[3], 'PX', a[1])  -- yet), state, then (score, digest) per id
  redis.call('ZADD', k[2], 'NX', unpack(a, 4))
  if a[2] ~= '' then  -- once a day per card: forget ids past the history, keep the rest
    redis.call('ZREMRANGEBYSCORE', k[2], '-inf', a[2])
    redis.call('PEXPIRE', k[2], a[1])
  end
  return 1
end
function ops.count_merchant(k, a)  -- days hash; TTL, oldest day kept, field cap, then
  for i = 4, #a, 2 do  -- (day, n) pairs
    if redis.call('HINCRBY', k[1], 'n' .. a[i], a[i + 1]) == tonumber(a[i + 1]) then
      redis.call('PEXPIRE', k[1], a[1])  -- a new day: keep the hash, forget stale days
      if redis.call('HLEN', k[1]) > tonumber(a[3]) then
        for _, field in ipairs(redis.call('HKEYS', k[1])) do
          if tonumber(string.sub(field, 2)) < tonumber(a[2]) then
            redis.call('HDEL', k[1], field)
          end
        end
      end
    end
  end
  return 1
end
function ops.record_label(k, a)  -- label marker, merchant days; label, fraud field, TTL
  local old = redis.call('GET', k[1])
  if old == a[1] then return 0 end
  redis.call('SET', k[1], a[1], 'PX', a[3])
  if a[1] == 'fraud' then
    redis.call('HINCRBY', k[2], a[2], 1)
  elseif old == 'fraud' then
    redis.call('HINCRBY', k[2], a[2], -1)
  end
  redis.call('PEXPIRE', k[2], a[3])
  return 1
end
function ops.delete_if(k, a)  -- a key; the value it must still hold
  if redis.call('GET', k[1]) == a[1] then return redis.call('DEL', k[1]) end
  return 0
end
local out, key, at = {}, 1, 1
while at <= #ARGV do
  local name, nkeys, nargs = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  out[#out + 1] = ops[name]({unpack(KEYS, key, key + nkeys - 1)},
                            {unpack(ARGV, at + 3, at + 2 + nargs)})
  key, at = key + nkeys, at + 3 + nargs
end
return out
"""
_SHA: Final = hashlib.sha1(DISPATCH.encode()).hexdigest()
OPS_PER_CALL: Final = 256  # a call holds Redis for its length: keep each one short


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
    lost = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
    if lost:
        client.script_load(DISPATCH)  # on every primary of a cluster
        for i, reply in zip(lost, _pipeline(client, [calls[i] for i in lost]), strict=True):
            replies[i] = reply
    out: list[Any] = [None] * len(ops)
    for (indexes, _), reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            raise reply
        for i, value in zip(indexes, reply, strict=True):
            out[i] = value
    return out


def _calls(ops: Sequence[Op], cluster: bool) -> list[tuple[list[int], tuple[Any, ...]]]:
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


def _pipeline(client: RedisClient, calls: list[tuple[list[int], tuple[Any, ...]]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for _, command in calls:
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))
