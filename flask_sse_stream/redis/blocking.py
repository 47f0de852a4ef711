"""One server or Sentinel: a single ``XREAD BLOCK`` over every followed key, on one
connection to the primary.

Keys come and go as followers do (a new key wakes the blocked read with ``CLIENT
UNBLOCK`` on that server). With Sentinel the connection goes to the primary the
sentinels name; a read error asks them again before reconnecting. Every Sentinel read
carries a ``ROLE`` in the same pipeline (no extra round trip): a primary demoted while
the reader was not blocked serves reads as a replica instead of failing, from a history
its resync replaces, so a read answered by a non-primary is dropped and the reader
reconnects. After any lost connection the positions are checked on the new connection
before it reads (``recovery.py``).
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import redis

from .. import runtime
from ..runtime import CloseReason
from .backoff import Backoff
from .connection import ERRORS, ReadConnection, topology_changed
from .feeds import Feed, Read
from .ids import text
from .reader import BLOCK_MS, LOST_AFTER, READ_COUNT, Pending, Reader
from .recovery import lost_positions, server_ms

if TYPE_CHECKING:
    from .log import RedisLog

__all__ = ["BlockingReader"]

log = logging.getLogger("flask_sse_stream.redis")



class _Demoted(redis.ConnectionError):
    """The reader's server is no primary any more (Sentinel)."""


class BlockingReader(Reader):
    """The one ``XREAD BLOCK`` loop of a process over every key with local followers."""

    def __init__(self, owner: RedisLog) -> None:
        super().__init__(owner)
        self.blocked = False  # an XREAD over the current keys is (about to be) waiting
        self.reading = 0  # counts the reads, so a wake-up targets one of them
        self.woken = -1
        self._conn: ReadConnection | None = None
        self._suspect = False  # the connection was lost: check positions on reconnect
        self._roles = owner.topology.kind == "sentinel"  # check ROLE with every read

    def _started(self, feed: Feed) -> None:
        if not self._start_loop(self._run):
            self._wake()

    def _shutdown(self) -> None:
        self._wake()

    def _wake(self) -> None:
        """Make a blocked XREAD return, so it starts over with the new keys."""
        with self.lock:
            conn = self._conn
            if not self.blocked or self.woken == self.reading or conn is None:
                return
            self.woken = round_ = self.reading
        sleep = runtime.current().sleep
        for _ in range(50):  # the XREAD may not have reached Redis yet: try again shortly
            try:
                if self.log.topology_for_thread().unblock(conn):
                    return
            except ERRORS:
                return  # the BLOCK timeout is the fallback
            with self.lock:
                if not self.blocked or self.reading != round_:
                    return
            sleep(0.002)

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        concurrency = runtime.current()
        backoff = Backoff()
        failing_since: float | None = None
        try:
            while True:
                with self.lock:
                    streams = {k: f.last_id for k, f in self.feeds.items() if f.ready}
                    if not self.feeds or self._stopped:
                        self.running = False
                        return
                    self.reading += 1
                    self.blocked = bool(streams)
                try:
                    conn = self._conn
                    if conn is None:
                        self._connect()
                        continue  # read on from the positions as checked on it
                    response = None
                    if streams:
                        response = self._xread(conn, streams, BLOCK_MS)
                    else:
                        concurrency.sleep(0.01)  # keys are being started
                    with self.lock:
                        self.blocked = False
                    if response:
                        more = self._more(conn)
                        self.gather(_as_read(response, streams), more, concurrency,
                                     client=conn.client)
                except ERRORS as exc:
                    with self.lock:
                        self.blocked = False
                    failing_since = failing_since or time.monotonic()
                    if self._failed(exc, streams, failing_since, backoff):
                        failing_since = None  # those that join now get their own wait
                    continue
                except Exception:  # a bug must not leave followers waiting in silence
                    log.exception("redis reader failed; its followers reconnect")
                    self._close_conn()
                    self._end_all(CloseReason.BROKER_LOST)
                    concurrency.sleep(backoff.next_delay())
                    continue
                if failing_since is not None:
                    failing_since = None
                    backoff.reset()
                    log.warning("redis reader: reading again")
                self.log.sweep_idle()
        except BaseException:  # killed (e.g. GreenletExit): a later join starts another
            with self.lock:
                self.running = self.blocked = False
            raise
        finally:
            self._close_conn()

    def _more(self, conn: ReadConnection) -> Any:
        def read_more(pending: Pending) -> Read | None:
            with self.lock:
                streams = {f.key: f.last_id for f in pending if self.feeds.get(f.key) is f}
            if not streams:
                return None
            return _as_read(self._xread(conn, streams, None), streams)

        return read_more

    def _xread(self, conn: ReadConnection, streams: dict[str, str], block: int | None) -> Any:
        """XREAD (blocking up to ``block`` ms); with Sentinel followed by ``ROLE`` in the
        same round trip, and dropped (``_Demoted``) if a non-primary answered it."""
        if not self._roles:
            return conn.client.xread(streams, count=READ_COUNT, block=block)
        with conn.client.pipeline(transaction=False) as pipe:
            pipe.xread(streams, count=READ_COUNT, block=block)
            pipe.execute_command("ROLE")
            response, role = pipe.execute()
        if text(role[0]) != "master":
            raise _Demoted(f"{conn.node.name} is no primary any more")
        return response

    def _connect(self) -> None:
        """Connect to the primary; after an outage, check the positions on it first."""
        topology = self.log.topology
        node = topology.nodes()[0]
        conn = topology.read_connection(node, read_timeout=BLOCK_MS / 1000 + self.log.timeout)
        try:
            if self._roles and text(conn.client.execute_command("ROLE")[0]) != "master":
                raise _Demoted(f"{node.name} is no primary (yet)")
            if self._suspect:
                lost = lost_positions(conn.client.pipeline(transaction=False),
                                      self.positions(), server_ms(conn.client))
                self.settle(lost)
                self._suspect = False
        except BaseException:
            conn.close()
            raise
        with self.lock:
            self._conn = conn

    def _close_conn(self) -> None:
        with self.lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _failed(self, exc: BaseException, streams: dict[str, str], since: float,
                backoff: Backoff) -> bool:
        """Handle a failed read; True if the followers were sent away."""
        self._close_conn()
        if isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc):
            if not self._drop_wrong_types(streams):
                runtime.current().sleep(backoff.next_delay())
            return False
        if not isinstance(exc, redis.ResponseError) or topology_changed(exc):
            # the connection was lost (a refusal, like NOPERM, replaces no history)
            self._suspect = True
            self.unsettle()
            with suppress(*ERRORS):
                self.log.topology.refresh()  # Sentinel: ask which server is primary now
        else:
            with self.lock:
                for feed in self.feeds.values():
                    feed.check = True
        ended = time.monotonic() - since >= LOST_AFTER
        if ended:
            log.warning("redis reader: %s for %.0fs; ending its streams (they reconnect)",
                        exc, LOST_AFTER)
            self._end_all(CloseReason.BROKER_LOST)
        else:
            log.warning("redis reader: %s; retrying", exc)
        runtime.current().sleep(backoff.next_delay())
        return ended

    def _drop_wrong_types(self, streams: dict[str, str]) -> int:
        """A key that is not a stream fails the whole XREAD: end only its followers.
        Returns how many keys were dropped."""
        try:
            kinds = self.log.key_types(list(streams))
        except ERRORS as exc:
            log.warning("redis reader: cannot check key types: %s", exc)
            return 0
        dropped = 0
        for key, kind in kinds.items():
            if kind not in ("stream", "none"):
                log.warning("redis reader: %r is a %s, not a stream", key, kind)
                self.end_key(key, CloseReason.BROKER_LOST)
                dropped += 1
        return dropped


def _as_read(response: Any, streams: dict[str, str]) -> Read:
    """An XREAD reply as (key, the id it was read after, entries)."""
    read: Read = []
    for raw_key, entries in response or ():
        key = text(raw_key)
        since = streams.get(key)
        if since is not None:
            read.append((key, since, entries))
    return read
