"""Working memory in Redis: sessions, their recent messages, and the set of active sessions.

::

    from memory_drivers.redis import SessionMemory
    sessions = SessionMemory()                      # REDIS_URL, REDIS_PREFIX, SESSION_TTL, ...
    s = sessions.create("alice", data={"topic": "travel"})
    sessions.add_message(s.session_id, "user", "Find me a flight to Lisbon")
    sessions.history(s.session_id)                  # the last SESSION_HISTORY_LIMIT messages
    sessions.active_sessions()                      # ids of sessions that have not expired
    sessions.end(s.session_id)

Keys (``P`` is ``REDIS_PREFIX``)::

    P:session:<id>    hash: user_id, created/updated/expiry times, ttl, "d:<key>" per data key
    P:history:<id>    list: the session's last messages, oldest first (capped with LTRIM)
    P:sessions        sorted set: session id -> the moment its keys expire (ms, Redis clock)

A session and its history expire together, ``SESSION_TTL`` seconds after the last access
(``get``, ``update``, ``add_message``, ``history``, ``touch``). Every operation is one Lua
script, so it is atomic and uses Redis's clock: an update or a message for a session that has
just expired fails with ``NotFoundError`` instead of re-creating half a session, and
``active_sessions()`` checks each listed session's key inside the same script, so it never lists
one that has expired or was removed.

:class:`~.aio.AsyncSessionMemory` offers the same methods as coroutines: they run this code,
with its Redis commands (all through ``self._redis``) awaited on the event loop.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .. import validation as check
from ..config import Settings, get_settings
from ..errors import ConflictError, NotFoundError, ValidationError
from .client import Clients, connect, redacted, redis_errors, unavailable

__all__ = ["Message", "Session", "SessionMemory"]

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: session hash, history list, active set. Extends both keys' life from now.
_REFRESH = """
local function refresh(id)
  local deadline = now_ms() + tonumber(redis.call('HGET', KEYS[1], 'ttl_ms'))
  redis.call('HSET', KEYS[1], 'expires_ms', deadline)
  redis.call('PEXPIREAT', KEYS[1], deadline)
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIREAT', KEYS[2], deadline) end
  redis.call('ZADD', KEYS[3], deadline, id)
  return deadline
end
local function missing(id)
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('ZREM', KEYS[3], id)
    return true
  end
  return false
end
"""

# ARGV: id, ttl_ms, user_id, then data field/value pairs.
_CREATE = (
    _NOW
    + _REFRESH
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
redis.call('DEL', KEYS[2])
local now = now_ms()
redis.call('HSET', KEYS[1], 'user_id', ARGV[3], 'created_ms', now, 'updated_ms', now,
           'ttl_ms', ARGV[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return {refresh(ARGV[1]), redis.call('HGETALL', KEYS[1])}
"""
)

# ARGV: id, refresh ('1' or '0').
_GET = (
    _NOW
    + _REFRESH
    + """
if missing(ARGV[1]) then return false end
if ARGV[2] == '1' then refresh(ARGV[1]) end
return {redis.call('HGET', KEYS[1], 'expires_ms'), redis.call('HGETALL', KEYS[1])}
"""
)

# ARGV: id, replace ('1' or '0'), n (number of keys to remove), n field names, field/value pairs.
_UPDATE = (
    _NOW
    + _REFRESH
    + """
if missing(ARGV[1]) then return false end
if ARGV[2] == '1' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'd:' then redis.call('HDEL', KEYS[1], field) end
  end
end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do redis.call('HDEL', KEYS[1], ARGV[i]) end
for i = 4 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'updated_ms', now_ms())
return {refresh(ARGV[1]), redis.call('HGETALL', KEYS[1])}
"""
)

# ARGV: id, limit, message JSON. Returns the history's length, or false.
_ADD_MESSAGE = (
    _NOW
    + _REFRESH
    + """
if missing(ARGV[1]) then return false end
local now = now_ms()
redis.call('RPUSH', KEYS[2], now .. '\\n' .. ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('HSET', KEYS[1], 'updated_ms', now)
refresh(ARGV[1])
return redis.call('LLEN', KEYS[2])
"""
)

# ARGV: id, how many of the last messages (0: all).
_HISTORY = (
    _NOW
    + _REFRESH
    + """
if missing(ARGV[1]) then return false end
refresh(ARGV[1])
local n = tonumber(ARGV[2])
if n == 0 then return redis.call('LRANGE', KEYS[2], 0, -1) end
return redis.call('LRANGE', KEYS[2], -n, -1)
"""
)

# ARGV: id.
_END = """
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return existed
"""

# KEYS: active set. ARGV: session key prefix, user id ('' for everyone).
_ACTIVE = (
    _NOW
    + """
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 1 then
    if ARGV[2] == '' or redis.call('HGET', key, 'user_id') == ARGV[2] then
      table.insert(out, id)
    end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Session(_Model):
    """A working-memory session: who it belongs to, its data, and when it expires."""

    session_id: str
    user_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    expires_at: datetime


class Message(_Model):
    """One message of a session's conversation history."""

    role: str
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


def _time(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)


class SessionMemory:
    """Sessions and conversation history in Redis (see the module docstring).

    ``redis`` is a ``redis.Redis`` client or a URL (default ``REDIS_URL``). ``prefix``, ``ttl``
    (seconds) and ``history_limit`` default to ``REDIS_PREFIX``, ``SESSION_TTL`` and
    ``SESSION_HISTORY_LIMIT``. Redis failures raise ``BackendUnavailableError``.
    """

    def __init__(
        self,
        redis: Any = None,
        *,
        settings: Settings | None = None,
        prefix: str | None = None,
        ttl: float | None = None,
        history_limit: int | None = None,
    ) -> None:
        s = settings or get_settings()
        self._errors = redis_errors()
        connect_async = None
        if redis is None or isinstance(redis, str):
            self.url = redacted(redis or s.redis_url)
            self._client = connect(redis or s.redis_url, timeout=s.redis_timeout)
            connect_async = functools.partial(
                connect, redis or s.redis_url, timeout=s.redis_timeout, asynchronous=True
            )
            self._owns_client = True
        else:
            self.url = "<client>"
            self._client = redis
            self._owns_client = False
        self.prefix = prefix if prefix is not None else s.redis_prefix
        if not self.prefix:
            raise ValidationError("the key prefix must not be empty")
        self.ttl = _positive(ttl if ttl is not None else s.session_ttl, "ttl")
        limit = history_limit if history_limit is not None else s.session_history_limit
        self.history_limit = int(check.top_k(limit, "history_limit"))
        scripts = {
            "create": _CREATE,
            "get": _GET,
            "update": _UPDATE,
            "add_message": _ADD_MESSAGE,
            "history": _HISTORY,
            "end": _END,
            "active": _ACTIVE,
        }
        #: every Redis command goes through it (sync, or awaited in a native async call)
        self._redis = Clients(self._client, connect_async, scripts)

    # ------------------------------------------------------------------ keys
    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def _keys(self, session_id: str) -> list[str]:
        return [
            self._session_key(session_id),
            f"{self.prefix}:history:{session_id}",
            f"{self.prefix}:sessions",
        ]

    def _run(self, name: str, keys: list[str], args: list[Any], doing: str) -> Any:
        try:
            return self._redis(lambda r: r.scripts[name](keys=keys, args=args))
        except self._errors as exc:
            raise unavailable(self.url, exc, doing) from exc

    @staticmethod
    def _session(session_id: str, deadline: Any, fields: list[str]) -> Session:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        data = {k[2:]: json.loads(v) for k, v in values.items() if k.startswith("d:")}
        return Session(
            session_id=session_id,
            user_id=values["user_id"],
            data=data,
            created_at=_time(values["created_ms"]),
            updated_at=_time(values["updated_ms"]),
            expires_at=_time(deadline),
        )

    @staticmethod
    def _fields(data: Mapping[str, Any] | None) -> list[str]:
        checked = check.metadata(data, "data")
        fields: list[str] = []
        for key, value in checked.items():
            fields += ["d:" + key, json.dumps(value, ensure_ascii=False, allow_nan=False)]
        return fields

    # ------------------------------------------------------------------ sessions
    def create(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        ttl: float | None = None,
    ) -> Session:
        """Start a session for ``user_id`` (``session_id`` default: a new UUID). ``ttl``
        overrides ``SESSION_TTL`` for this session. ``ConflictError`` if the id is taken."""
        user = check.identifier(user_id, "user_id")
        sid = _session_id(session_id) if session_id is not None else uuid.uuid4().hex
        ttl_ms = _milliseconds(ttl if ttl is not None else self.ttl)
        result = self._run(
            "create",
            self._keys(sid),
            [sid, ttl_ms, user, *self._fields(data)],
            "creating a session",
        )
        if result is None:
            raise ConflictError(f"a session {sid!r} exists already")
        return self._session(sid, result[0], result[1])

    def get(self, session_id: str, *, refresh: bool = True) -> Session | None:
        """The session, or None if it does not exist (or expired). Extends its life unless
        ``refresh=False``."""
        sid = _session_id(session_id)
        result = self._run(
            "get", self._keys(sid), [sid, "1" if refresh else "0"], "reading a session"
        )
        return None if result is None else self._session(sid, result[0], result[1])

    def touch(self, session_id: str) -> bool:
        """Extend the session's life; False if it does not exist."""
        return self.get(session_id) is not None

    def update(
        self,
        session_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        remove: list[str] | tuple[str, ...] = (),
        replace: bool = False,
    ) -> Session:
        """Set the keys of ``data`` (merging; ``replace=True`` drops the other keys first) and
        drop the keys in ``remove``, atomically. ``NotFoundError`` if the session is gone."""
        sid = _session_id(session_id)
        if isinstance(remove, str) or not all(isinstance(k, str) for k in remove):
            raise ValidationError("remove must be a list of data keys")
        args = [sid, "1" if replace else "0", len(remove), *("d:" + k for k in remove)]
        result = self._run(
            "update", self._keys(sid), [*args, *self._fields(data)], "updating a session"
        )
        if result is None:
            raise NotFoundError(f"no session {sid!r} (it ended or expired)")
        return self._session(sid, result[0], result[1])

    def end(self, session_id: str) -> bool:
        """End the session now: remove it and its history. False if there was none."""
        sid = _session_id(session_id)
        return bool(self._run("end", self._keys(sid), [sid], "ending a session"))

    def active_sessions(self, user_id: str | None = None) -> list[str]:
        """The ids of every session that has not expired (of ``user_id`` when given), in the
        order they expire. Drops expired ones from the set as it goes."""
        user = check.identifier(user_id, "user_id", optional=True)
        result = self._run(
            "active",
            [f"{self.prefix}:sessions"],
            [self._session_key(""), user or ""],
            "listing sessions",
        )
        return list(result)

    # ------------------------------------------------------------------ history
    def add_message(
        self,
        session_id: str,
        role: str,
        content: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Append a message to the session's history, dropping the oldest beyond
        ``history_limit``; returns the history's length. ``NotFoundError`` if the session is
        gone."""
        sid = _session_id(session_id)
        message = {
            "role": check.identifier(role, "role"),
            "content": _text(content),
            "metadata": check.metadata(metadata),
        }
        payload = json.dumps(message, ensure_ascii=False, allow_nan=False)
        result = self._run(
            "add_message",
            self._keys(sid),
            [sid, self.history_limit, payload],
            "adding a message",
        )
        if result is None:
            raise NotFoundError(f"no session {sid!r} (it ended or expired)")
        return int(result)

    def history(self, session_id: str, last: int | None = None) -> list[Message]:
        """The session's messages, oldest first (only the ``last`` ones when given).
        ``NotFoundError`` if the session is gone."""
        sid = _session_id(session_id)
        n = 0 if last is None else check.top_k(last, "last")
        result = self._run("history", self._keys(sid), [sid, n], "reading a history")
        if result is None:
            raise NotFoundError(f"no session {sid!r} (it ended or expired)")
        messages = []
        for item in result:
            ms, _, payload = item.partition("\n")
            messages.append(Message(**json.loads(payload), created_at=_time(ms)))
        return messages

    # ------------------------------------------------------------------ operations
    def health(self) -> dict[str, Any]:
        """``status`` (``ok``/``error``), Redis memory use, and key counts of this prefix."""
        try:
            memory = self._redis(lambda r: r.client.info("memory"))
            sessions = histories = 0
            cursor: Any = 0
            match = f"{_glob(self.prefix)}:*"
            while True:  # SCAN by hand: the same loop for the sync and the async client
                cursor, keys = self._redis(
                    functools.partial(_scan, cursor=cursor, match=match, count=1000)
                )
                for key in keys:
                    if key.startswith(f"{self.prefix}:session:"):
                        sessions += 1
                    elif key.startswith(f"{self.prefix}:history:"):
                        histories += 1
                if not int(cursor):
                    break
            total = self._redis(lambda r: r.client.dbsize())
        except self._errors as exc:
            return {"status": "error", "url": self.url, "error": f"{type(exc).__name__}: {exc}"}
        return {
            "status": "ok",
            "url": self.url,
            "prefix": self.prefix,
            "active_sessions": len(self.active_sessions()),
            "keys": {"sessions": sessions, "histories": histories, "database": total},
            "memory": {
                "used_memory": memory.get("used_memory"),
                "used_memory_human": memory.get("used_memory_human"),
                "maxmemory": memory.get("maxmemory"),
            },
        }

    def close(self) -> None:
        """Close the client if this object made it."""
        self._redis.close(sync=self._owns_client)

    def __enter__(self) -> SessionMemory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _session_id(value: Any) -> str:
    return check.identifier(value, "session_id")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("content must be a non-empty string")
    return value


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValidationError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def _milliseconds(seconds: Any) -> int:
    return max(1, round(_positive(seconds, "ttl") * 1000))


def _scan(commands: Any, **options: Any) -> Any:
    return commands.client.scan(**options)


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
