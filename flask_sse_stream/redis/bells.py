"""A cluster's doorbells: the append that rings one, and what a bell carries.

One Lua script per append (``KEYS[1]`` the stream, so the cluster routes it to the key's
node and it runs atomically there): the stream's last id, the ``XADD``, an optional
``EXPIRE``, and ``SPUBLISH`` on the shard channel named like the key. The bell carries the
id before the new entry, the new id and the entry's fields, so a reader whose position
is exactly that previous id has the entry without reading it (one message instead of a
bell and an ``XREAD`` round trip per reader). An entry larger than ``PAYLOAD_LIMIT``
rings an empty bell (its readers read it): big events then do not fill the pub/sub
output buffers of slow readers.

Bell format: ``<previous id>\\n<id>\\n`` then each field and value as ``<length>:<bytes>``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis

__all__ = ["APPEND_SCRIPT", "PAYLOAD_LIMIT", "append_args", "parse_bell", "ring"]

PAYLOAD_LIMIT = 4096  # bytes of fields a bell carries at most

# KEYS[1] stream; ARGV: maxlen ("" none), expire seconds ("" none), payload limit,
# then field, value pairs. Returns the new id.
APPEND_SCRIPT = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end
local xadd = {'XADD', KEYS[1]}
if ARGV[1] ~= '' then
  xadd[#xadd + 1] = 'MAXLEN'; xadd[#xadd + 1] = '~'; xadd[#xadd + 1] = ARGV[1]
end
xadd[#xadd + 1] = '*'
local size = 0
for i = 4, #ARGV do
  xadd[#xadd + 1] = ARGV[i]
  size = size + #ARGV[i]
end
local id = redis.call(unpack(xadd))
if ARGV[2] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local bell = ''
if size <= tonumber(ARGV[3]) then
  local parts = {prev, '\\n', id, '\\n'}
  for i = 4, #ARGV do
    parts[#parts + 1] = #ARGV[i] .. ':' .. ARGV[i]
  end
  bell = table.concat(parts)
end
redis.call('SPUBLISH', KEYS[1], bell)
return id
"""


APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()


def ring(client: Any, key: str, args: list[Any], wait: tuple[int, float] | None
         ) -> tuple[Any, Any]:
    """Run the append on ``client`` (the key's node's own): the new id, and with
    ``wait=(replicas, seconds)`` the replicas that acknowledged it (else None). The
    script is loaded on the node when it does not know it yet. Raises redis errors."""
    for attempt in (1, 2):
        try:
            if wait is None:
                return client.evalsha(APPEND_SHA, 1, key, *args), None
            with client.pipeline(transaction=False) as pipe:
                pipe.evalsha(APPEND_SHA, 1, key, *args)
                pipe.wait(wait[0], max(1, int(wait[1] * 1000)))
                entry_id, acked = pipe.execute(raise_on_error=False)
            if isinstance(entry_id, BaseException):
                raise entry_id
            return entry_id, acked
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            client.script_load(APPEND_SCRIPT)  # (nothing was written)
    raise AssertionError("unreachable")


def append_args(fields: dict[str, Any], maxlen: int | None, expire: int | None) -> list[Any]:
    """The script's ``ARGV`` for one append."""
    args: list[Any] = ["" if maxlen is None else maxlen, "" if expire is None else expire,
                       PAYLOAD_LIMIT]
    for name, value in fields.items():
        args += [name, value]
    return args


def parse_bell(data: bytes) -> tuple[str, str, dict[bytes, bytes]] | None:
    """(previous id, id, fields) from a bell, or None for an empty (or foreign) one."""
    prev, sep, rest = data.partition(b"\n")
    entry_id, sep2, rest = rest.partition(b"\n")
    if not sep or not sep2:
        return None
    fields: dict[bytes, bytes] = {}
    i, end = 0, len(rest)
    try:
        while i < end:
            name, i = _take(rest, i)
            value, i = _take(rest, i)
            fields[name] = value
    except ValueError:
        return None
    return prev.decode("ascii", "replace"), entry_id.decode("ascii", "replace"), fields


def _take(data: bytes, i: int) -> tuple[bytes, int]:
    colon = data.index(b":", i)
    size = int(data[i:colon])
    start = colon + 1
    if size < 0 or start + size > len(data):
        raise ValueError("truncated bell")
    return data[start:start + size], start + size
