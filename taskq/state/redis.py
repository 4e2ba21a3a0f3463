"""The state store in Redis (redis-py, ``pip install 'taskq-rabbitmq[redis]'``): for workers and
callers on many machines.

Per task a string ``<prefix><id>`` (the record, msgpack) and a list ``<prefix><id>:timeline``.
A write is one round trip, one Lua script (SET, RPUSH, LTRIM, EXPIRE), atomic as scripts
are, so a reader never sees the state without its timeline entry; Redis itself drops a
record after its retention.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from taskq import settings
from taskq.broker import mask_url
from taskq.errors import StateStoreError
from taskq.message import pack, unpack
from taskq.state.records import TaskRecord
from taskq.state.store import StateStore

#: Before every key: one Redis database can hold several apps' stores, or other data
#: (``redis://host:6379/0?prefix=shop:`` for another).
DEFAULT_PREFIX = "taskq:task:"


#: KEYS: the record, its timeline. ARGV: seconds to keep, timeline entries to keep, the record
#: (msgpack), the timeline entry (msgpack; '' for none).
WRITE_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[4])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return 1
"""


#: KEYS: the chord's hash. ARGV: the member index, its result (msgpack), the chord's size, seconds
#: to keep. HSETNX keeps the first result of a member run twice; the count is read in the same script.
JOIN_SCRIPT = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.call('HGETALL', KEYS[1])
end
return false
"""


class RedisStore(StateStore):
    """Records in the Redis database ``url`` names; one client (and its pool) per process."""

    def __init__(self, url: str, *, prefix: str | None = None, retention: float = settings.RESULT_RETENTION,
                 timeout: float = settings.STATE_REDIS_TIMEOUT) -> None:
        self.url, prefix_in_url = without_prefix(url)
        self.masked_url = mask_url(url)
        self.prefix = prefix if prefix is not None else prefix_in_url or DEFAULT_PREFIX
        self.retention = retention
        self.timeout = timeout
        self._client: redis.Redis | None = None
        self._script: Any = None
        self._script_client: redis.Redis | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def write(self, task_id: str, fields: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> None:
        key = self.prefix + task_id
        arguments = [max(1, int(self.retention)), settings.STATE_TIMELINE_LIMIT, pack(dict(fields)),
                     pack(dict(entry)) if entry is not None else b""]
        try:
            self._write_script()(keys=[key, key + ":timeline"], args=arguments)
        except redis.RedisError as exc:
            raise self._error("write to", exc) from exc

    def read(self, task_id: str) -> TaskRecord | None:
        key = self.prefix + task_id
        try:
            pipe = self._redis().pipeline(transaction=True)
            pipe.get(key)
            pipe.lrange(key + ":timeline", 0, -1)
            found, entries = pipe.execute()
        except redis.RedisError as exc:
            raise self._error("read", exc) from exc
        if found is None:
            return None
        try:
            fields = unpack(found)
            timeline = [unpack(entry) for entry in entries]
            if not isinstance(fields, dict):
                raise ValueError("not a map")
        except Exception as exc:  # not written by taskq: say so rather than guess
            raise StateStoreError(f"state store at {self.masked_url}: the key {key!r} is not a taskq record "
                                  f"({type(exc).__name__}: {exc})") from exc
        return TaskRecord.from_fields(task_id, fields, timeline)

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    def _write_script(self) -> Any:
        """The write as one server-side script: one command and one reply. As a MULTI of HSET,
        EXPIRE, RPUSH, LTRIM, EXPIRE it was seven replies for redis-py to parse, and one argument
        per field: most of a worker child's time per task (docs/benchmarks.md, "The state store")."""
        client = self._redis()
        if self._script is None or self._script_client is not client:
            self._script = client.register_script(WRITE_SCRIPT)  # EVALSHA, loading it if Redis lacks it
            self._script_client = client
        return self._script

    def _redis(self) -> redis.Redis:
        """This process's client: one inherited across a fork would share its sockets with the parent."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                try:
                    self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                                        socket_connect_timeout=self.timeout)
                except ValueError as exc:  # a malformed URL
                    raise StateStoreError(f"bad Redis URL for the state store {self.masked_url}: {exc}") from exc
                self._pid = os.getpid()
            return self._client

    def _error(self, doing: str, exc: BaseException) -> StateStoreError:
        return StateStoreError(f"cannot {doing} the state store at {self.masked_url}: {type(exc).__name__}: {exc}")

    # -- chords (StateStore.join_member, claim_once) -------------------------------------------

    def join_member(self, group_id: str, index: int, result: Any, size: int) -> list[Any] | None:
        try:
            found = self._redis().eval(JOIN_SCRIPT, 1, f"{self.prefix}join:{group_id}", index, pack(result), size,
                                       max(1, int(self.retention)))
        except redis.RedisError as exc:
            raise self._error("join a chord in", exc) from exc
        return ordered_members(found, size) if found else None

    def claim_once(self, key: str, token: str) -> bool:
        """SET NX, then GET if it was taken: the winner is whoever set it first."""
        name = f"{self.prefix}claim:{key}"
        try:
            client = self._redis()
            if client.set(name, token, nx=True, ex=max(1, int(self.retention))):
                return True
            found = client.get(name)
        except redis.RedisError as exc:
            raise self._error("claim a chord callback in", exc) from exc
        return bool(found is not None and (found.decode() if isinstance(found, bytes) else found) == token)


def ordered_members(flat: list[Any], size: int) -> list[Any]:
    """HGETALL's [field, value, ...] as the members' results, in member order."""
    members = {int(flat[i]): unpack(flat[i + 1]) for i in range(0, len(flat), 2)}
    return [members[i] for i in range(size)]


def without_prefix(url: str) -> tuple[str, str | None]:
    """The URL without its ``prefix=`` query parameter (ours, not redis-py's), and that prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "prefix"), None)
    kept = urlencode([(name, value) for name, value in query if name != "prefix"])
    return urlunsplit(parts._replace(query=kept)), prefix
