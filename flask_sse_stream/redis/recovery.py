"""After the reader lost its connection: which followed positions the server now serving
a key does not hold, and where to go on from.

A failover to a replica that had not got the newest entries, or a restart without data,
replaces a stream's history. Nothing on the server says so afterwards; only a position
somebody holds can show it. So after every reconnect the reader checks each feed's last
id (``XRANGE P P``), pipelined, *before* reading on:

* held: exact, nothing to do;
* not held: entries after ``P`` may be lost, the followers get the gap (``reset`` for
  channels, a ``close`` with ``finish_reason: "error"`` for chat) now, not at the next
  batch (after a restart on a clock that is behind, none would ever come);
* not held, the stream's newest entry (if any) below ``P``, and the server's clock not
  past ``P``: the ids went backwards (a restart on a clock that is behind); reading on
  after ``P`` would wait for ids that will not come for as long as the clocks differ.
  The feed *rewinds* to ``0-0``: every entry now in the stream is newer than the loss.
  (With the server's clock past ``P``, new ids are larger than ``P`` and the entries
  still held below it are the ones that were read already: a lossy failover keeps a
  prefix of the history. The feed goes on after ``P`` without duplicates.)
"""

from __future__ import annotations

from typing import Any

import redis

from .ids import ZERO, parse_id, text

__all__ = ["lost_positions", "server_ms"]


def lost_positions(pipeline: Any, points: dict[str, str], now_ms: int) -> dict[str, bool]:
    """Check ``points`` (key -> the feed's last id, never ``0-0``) with one pipeline of
    the connection that serves the keys now; ``now_ms`` is that server's clock. Returns
    the keys whose position is gone, each with whether its feed must rewind to ``0-0``.
    Raises redis errors (the reader retries the whole check)."""
    keys = list(points)
    if not keys:
        return {}
    with pipeline as pipe:
        for key in keys:
            pipe.xrange(key, min=points[key], max=points[key], count=1)
            pipe.xrevrange(key, count=1)
        results = pipe.execute(raise_on_error=False)
    lost: dict[str, bool] = {}
    for i, key in enumerate(keys):
        held, newest = results[2 * i], results[2 * i + 1]
        for result in (held, newest):
            if isinstance(result, redis.ResponseError) and "WRONGTYPE" in str(result):
                held = newest = None  # not a stream now: its reads end its followers
            elif isinstance(result, BaseException):
                raise result
        if held is None or held:
            continue
        position = parse_id(points[key]) or ZERO
        newest_position = (parse_id(text(newest[0][0])) or ZERO) if newest else ZERO
        lost[key] = newest_position < position and now_ms <= position[0]
    return lost


def server_ms(client: Any) -> int:
    """The server's clock (``TIME``) in milliseconds."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000
