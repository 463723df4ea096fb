"""Whether this client can reach and log in to Redis, said in one line that names the cause."""

from __future__ import annotations

import logging
import re

import redis
from redis.exceptions import RedisClusterException

from services.core.errors import UserError
from services.core.settings import RedisSettings

CHECK_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)
_CREDENTIALS = re.compile(r"://[^@/]*@")


class RedisUnavailable(UserError):
    """Redis cannot be used with these settings; the message says why, in one line."""


def check_redis(
    settings: RedisSettings, timeout_s: float = CHECK_TIMEOUT_S, outage_ok: bool = False
) -> None:
    """Return once Redis answers a PING with these credentials; else raise RedisUnavailable.
    ``outage_ok``: an unreachable Redis is only logged (a component that works through an
    outage must start during one); refused credentials are always an error."""
    where = _CREDENTIALS.sub("://", settings.require_url())
    try:
        with settings.client(socket_timeout=timeout_s, socket_connect_timeout=timeout_s) as c:
            c.ping()
    except redis.AuthenticationError as error:
        raise RedisUnavailable(f"Redis at {where}: authentication failed: {error}") from None
    except redis.ResponseError as error:  # NOAUTH, WRONGPASS and their kin
        raise RedisUnavailable(f"Redis at {where}: refused: {error}") from None
    except (redis.RedisError, OSError, RedisClusterException) as error:
        if not outage_ok:
            raise RedisUnavailable(f"Redis at {where}: unreachable: {error}") from None
        log.warning("Redis at %s: unreachable (%s); starting all the same", where, error)
