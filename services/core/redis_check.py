"""Whether this client can reach and log in to Redis, said in one line that names the cause."""

from __future__ import annotations

import re

import redis

from services.core.errors import UserError
from services.core.settings import RedisSettings

CHECK_TIMEOUT_S = 5.0
_CREDENTIALS = re.compile(r"://[^@/]*@")


class RedisUnavailable(UserError):
    """Redis cannot be used with these settings; the message says why, in one line."""


def check_redis(settings: RedisSettings, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Return once Redis answers a PING with these credentials; else raise RedisUnavailable."""
    where = _CREDENTIALS.sub("://", settings.require_url())
    try:
        with settings.client(socket_timeout=timeout_s, socket_connect_timeout=timeout_s) as c:
            c.ping()
    except redis.AuthenticationError as error:
        raise RedisUnavailable(f"Redis at {where}: authentication failed: {error}") from None
    except redis.ResponseError as error:  # NOAUTH, WRONGPASS and their kin
        raise RedisUnavailable(f"Redis at {where}: refused: {error}") from None
    except (redis.RedisError, OSError) as error:
        raise RedisUnavailable(f"Redis at {where}: unreachable: {error}") from None
