"""Presence on Redis: each process's subscriber counts, kept alive while it lives.

Data (every key carries the hash tag ``{presence}``, so they share one cluster slot and
one script can reach them all):

* ``<prefix>{presence}:p:<process>``: a hash ``channel -> streams`` of one process (only
  channels it has subscribers on, plus the marker field ``@``, which no channel name can
  be), with a TTL of ``TTL`` seconds that each exchange renews.
* ``<prefix>{presence}:procs``: a sorted set of the live processes, scored by the time
  (Redis's clock, ms) their hash expires; a process past its score is removed by the
  next script that runs and is no longer counted, even before its hash is gone.

A channel's count is the sum of its field over the live processes: nothing is stored as a
running total, so nothing can drift when a process dies (a process killed with SIGKILL
stops counting within ``TTL`` seconds; one that stops gracefully writes its zeros as its
last stream ends). One Lua script does a process's whole exchange in
one round trip: write the counts that changed, renew the TTL, drop the dead, sum the
others' counts of the channels this process has subscribers on (one ``HMGET`` per live
process, whatever the number of channels).

``TTL`` is a module constant; a test app may lower it (``tests/apps/presence_app.py``)
to watch a killed process leave the count quickly. It must stay well above the interval
of the announcing loop (``brokers/presence.INTERVAL``), which is when the TTL is renewed.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import mapped_errors

if TYPE_CHECKING:
    from .log import RedisLog

__all__ = ["TTL", "RedisCensus"]

TTL = 15.0  # seconds a process's counts outlive its last exchange
BATCH = 1000  # arguments per HSET / HDEL / HMGET inside the script (Lua's unpack limit)

_SCRIPT = """
local procs, own = KEYS[1], KEYS[2]
local me, ttl, hprefix, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local n, batch = tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = 0
if mode ~= 'read' then
  if mode == 'full' then
    redis.call('DEL', own)
  elseif redis.call('EXISTS', own) == 0 then
    lost = 1
  end
  local set, del = {'@', '1'}, {}
  for i = 7, 6 + 2 * n, 2 do
    if ARGV[i + 1] == '0' then
      del[#del + 1] = ARGV[i]
    else
      set[#set + 1] = ARGV[i]
      set[#set + 1] = ARGV[i + 1]
    end
  end
  for i = 1, #set, 2 * batch do
    redis.call('HSET', own, unpack(set, i, math.min(i + 2 * batch - 1, #set)))
  end
  for i = 1, #del, batch do
    redis.call('HDEL', own, unpack(del, i, math.min(i + batch - 1, #del)))
  end
  redis.call('PEXPIRE', own, ttl)
  redis.call('ZADD', procs, now + ttl, me)
  redis.call('PEXPIRE', procs, ttl)
end
redis.call('ZREMRANGEBYSCORE', procs, '-inf', now)
local wanted = {}
for i = 7 + 2 * n, #ARGV do wanted[#wanted + 1] = ARGV[i] end
local totals = {}
for i = 1, #wanted do totals[i] = 0 end
if #wanted > 0 then
  for _, p in ipairs(redis.call('ZRANGE', procs, 0, -1)) do
    if p ~= me then
      for j = 1, #wanted, batch do
        local last = math.min(j + batch - 1, #wanted)
        local values = redis.call('HMGET', hprefix .. p, unpack(wanted, j, last))
        for k = 1, last - j + 1 do
          local v = values[k]
          if v then totals[j + k - 1] = totals[j + k - 1] + tonumber(v) end
        end
      end
    end
  end
end
return {lost, totals}
"""


class RedisCensus:
    """The ``brokers.presence.Census`` of a Redis broker (see the module docstring)."""

    def __init__(self, log: RedisLog, key_prefix: str) -> None:
        self.log = log
        self.procs_key = f"{key_prefix}{{presence}}:procs"
        self.hash_prefix = f"{key_prefix}{{presence}}:p:"
        self._script: Any = None
        self._pid = 0
        self._id = ""
        self._synced = False  # Redis holds this process's full counts (diffs suffice)

    @property
    def process_id(self) -> str:
        """This process's name in Redis: host, pid and a random part (a pid is reused
        after a restart; a forked worker gets a name of its own)."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid, self._synced = pid, False
            self._id = f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}"
        return self._id

    def _call(self, mode: str, counts: dict[str, int], wanted: list[str]) -> tuple[bool, list[int]]:
        me = self.process_id
        args: list[Any] = [me, int(TTL * 1000), self.hash_prefix, mode, len(counts), BATCH]
        for channel, n in counts.items():
            args += [channel, n]
        args += wanted
        with mapped_errors():
            if self._script is None:
                self._script = self.log.client.register_script(_SCRIPT)
            lost, totals = self._script(
                keys=[self.procs_key, self.hash_prefix + me], args=args, client=self.log.client
            )
        return bool(lost), [int(n) for n in totals]

    def exchange(self, counts: dict[str, int], changed: dict[str, int],
                 wanted: list[str]) -> dict[str, int]:
        full = not self._synced
        lost, totals = self._call("full" if full else "diff", counts if full else changed, wanted)
        if lost:  # Redis lost this process's counts (restart, expiry): store them all
            lost, totals = self._call("full", counts, wanted)
        self._synced = True
        return dict(zip(wanted, totals, strict=True))

    def read(self, channels: Iterable[str]) -> dict[str, int]:
        wanted = list(channels)
        _lost, totals = self._call("read", {}, wanted)
        return dict(zip(wanted, totals, strict=True))
