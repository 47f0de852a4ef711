"""One primary's doorbells in a Redis Cluster (see ``doorbells.py``): a connection in
pub/sub mode (``SSUBSCRIBE`` per followed key), and the loop that delivers what the
bells bring or reads the keys they mark dirty, on the node's own client."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import redis

from .. import runtime
from ..runtime import CloseReason
from .bells import parse_bell
from .connection import ERRORS, Node
from .feeds import Read
from .ids import ZERO, parse_id, text
from .reader import READ_COUNT, Pending
from .recovery import lost_positions, server_ms

if TYPE_CHECKING:
    from .doorbells import DoorbellReader

__all__ = ["CLOSE_IDLE_AFTER", "IDLE", "Closed", "NodeBells"]

log = logging.getLogger("flask_sse_stream.redis")

IDLE = 1.0  # seconds a node's loop waits for a bell before its housekeeping
CLOSE_IDLE_AFTER = 10.0  # a node's connection with no doorbell this long is closed


class Closed(Exception):
    """The node's doorbells were closed meanwhile: use a new one."""


class NodeBells:
    """One primary's doorbells: a connection in pub/sub mode, and the loop that reads
    the keys whose bells rang. Its sets are guarded by the reader's lock; sends on the
    connection by ``send_lock`` (a joiner subscribes while the loop reads)."""

    def __init__(self, reader: DoorbellReader, node: Node) -> None:
        self.reader = reader
        self.node = node
        self.pubsub: Any = reader.log.topology.node_pubsub(node)
        self.subscribed: set[str] = set()
        self.unconfirmed: dict[str, int] = {}  # SSUBSCRIBEs sent, not confirmed yet
        self.leaving: set[str] = set()  # SUNSUBSCRIBEs sent, not confirmed yet
        self.moved_in: set[str] = set()  # check their positions once confirmed
        self.to_check: set[str] = set()
        self.dirty: set[str] = set()
        self.direct: dict[str, list[tuple[str, str, dict[bytes, bytes]]]] = {}  # bells
        self.send_lock = threading.Lock()
        self.closed = False
        self._idle_since = self._tidied = time.monotonic()

    # -- called by joiners and the supervisor ----------------------------------------

    def subscribe(self, keys: list[str], *, check: bool) -> None:
        """Subscribe ``keys`` here (those not yet: one ``SSUBSCRIBE`` per slot); with
        ``check``, check their positions once confirmed. Raises redis errors, _Closed."""
        reader = self.reader
        with self.send_lock:
            with reader.lock:
                if self.closed:
                    raise Closed
                new = [k for k in keys if k not in self.subscribed]
                for key in keys:
                    reader.home[key] = self
                    if check:
                        self.moved_in.add(key)
                for key in new:
                    self.subscribed.add(key)
                    self.unconfirmed[key] = self.unconfirmed.get(key, 0) + 1
                confirmed = [k for k in keys if k not in self.unconfirmed]
                for key in confirmed:
                    self._confirmed(key)
            try:
                for batch in reader.log.topology.xread_batches(new):
                    self.pubsub.ssubscribe(*batch)
                if confirmed:
                    self.pubsub.ping()  # its loop waits for a bell: wake it to check them
            except ERRORS as exc:
                self._failed(exc)  # no half-subscribed connection stays in use
                raise

    def ring(self) -> None:
        """Wake the loop (a ``PING`` comes back as a message)."""
        with suppress(*ERRORS), self.send_lock:
            if not self.closed:
                self.pubsub.ping()

    def close(self) -> None:
        with self.reader.lock:
            self.closed = True
        self.ring()

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        concurrency = runtime.current()
        try:
            while not self.closed:
                message = self.pubsub.get_message(timeout=IDLE)
                while message is not None:
                    self._take(message)
                    message = self.pubsub.get_message(timeout=0)
                self._work(concurrency)
        except ERRORS as exc:
            self._failed(exc)
        except Exception as exc:  # a bug must not leave followers waiting in silence
            log.exception("redis doorbells of %s failed", self.node.name)
            self._failed(exc)
        finally:
            with self.reader.lock:
                self.closed = True
            with suppress(*ERRORS):
                self.pubsub.close()

    def _take(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            return
        key = text(message["channel"])
        reader = self.reader
        with reader.lock:
            if kind == "smessage":
                if key in reader.feeds and reader.home.get(key) is self:
                    bell = parse_bell(message["data"]) if message["data"] else None
                    if bell is None:
                        self.dirty.add(key)
                    else:
                        self.direct.setdefault(key, []).append(bell)
            elif kind == "ssubscribe":
                left = self.unconfirmed.get(key, 0) - 1
                if left > 0:
                    self.unconfirmed[key] = left
                else:
                    self.unconfirmed.pop(key, None)
                    self._confirmed(key)
            elif kind == "sunsubscribe":
                if key in self.leaving:
                    self.leaving.discard(key)
                elif key in self.subscribed:  # taken back: its slot moved away
                    reader.make_homeless(self, {key})

    def _confirmed(self, key: str) -> None:
        """(Under the reader's lock.) ``key``'s bells ring here now."""
        feed = self.reader.feeds.get(key)
        if feed is not None:
            feed.confirmed.set()
        if key in self.moved_in:
            self.moved_in.discard(key)
            self.to_check.add(key)

    def _work(self, concurrency: runtime.Concurrency) -> None:
        reader = self.reader
        with reader.lock:
            check, self.to_check = self.to_check, set()
        if check:
            self._check(check)
        first = self._collect()
        if first:
            reader.gather(first, self._read_more, concurrency, client=self._client())
        self._tidy()

    def _client(self) -> Any:
        """The node's own pooled client. Reads and checks never go through the cluster
        client: it would follow a failover to the promoted replica in silence, from one
        history to another without the position check. Here a moved slot surfaces
        (``MOVED``, a lost connection) and the keys go through a re-home and a check."""
        client = self.reader.log.topology.node_commands(self.node)
        if client is None:
            raise redis.ConnectionError(f"{self.node.name} is no primary any more")
        return client

    def _check(self, keys: set[str]) -> None:
        """Check the positions of keys that moved here (recovery.py), then read them."""
        client = self._client()
        lost = lost_positions(client.pipeline(transaction=False),
                              self.reader.positions(keys), server_ms(client))
        self.reader.settle(lost, keys)
        with self.reader.lock:
            for key in keys:
                self.reader.homeless_since.pop(key, None)
                if key in self.reader.feeds:
                    self.dirty.add(key)

    def _collect(self) -> Read:
        """What the bells brought: their entries where they chain from the feed's
        position, and a read of the dirty keys."""
        read = self._chained()
        keys = self._take_dirty()
        return read + self._read(keys) if keys else read

    def _chained(self) -> Read:
        """The bells' entries of each key that continue its feed exactly (those it has
        already are skipped); a key whose chain breaks is read instead."""
        reader = self.reader
        read: Read = []
        with reader.lock:
            direct, self.direct = self.direct, {}
            for key, bells in direct.items():
                feed = reader.feeds.get(key)
                if feed is None or reader.home.get(key) is not self:
                    continue
                if key in self.dirty or not feed.ready or feed.check:
                    self.dirty.add(key)
                    continue
                expected = feed.last_id
                have = parse_id(expected) or ZERO
                entries = []
                for prev, entry_id, fields in bells:
                    if (parse_id(entry_id) or ZERO) <= have:
                        continue  # read already
                    if prev != expected:
                        self.dirty.add(key)  # a bell went missing: read instead
                        break
                    entries.append((entry_id, fields))
                    expected = entry_id
                else:
                    if entries:
                        read.append((key, feed.last_id, entries))
        return read

    def _take_dirty(self) -> list[str]:
        reader = self.reader
        with reader.lock:
            keys = [k for k in self.dirty if (f := reader.feeds.get(k)) is not None and f.ready
                    and reader.home.get(k) is self]
            self.dirty.difference_update(keys)
            self.dirty.intersection_update(reader.feeds)  # not ready yet: kept for later
        return keys

    def _read(self, keys: list[str]) -> Read:
        """XREAD each key after its position, non-blocking, in one pipeline."""
        reader = self.reader
        with reader.lock:
            since = {k: f.last_id for k in keys if (f := reader.feeds.get(k)) is not None}
        with self._client().pipeline(transaction=False) as pipe:
            for key, last_id in since.items():
                pipe.xread({key: last_id}, count=READ_COUNT)
            results = pipe.execute(raise_on_error=False)
        read: Read = []
        for (key, last_id), result in zip(since.items(), results, strict=True):
            if isinstance(result, redis.ResponseError) and "WRONGTYPE" in str(result):
                log.warning("redis reader: %r is not a stream", key)
                reader.end_key(key, CloseReason.BROKER_LOST)
                continue
            if isinstance(result, BaseException):
                raise result
            for _raw_key, entries in result or ():
                read.append((key, last_id, entries))
                if len(entries) >= READ_COUNT:
                    with reader.lock:
                        self.dirty.add(key)  # more to read
        return read

    def _read_more(self, pending: Pending) -> Read | None:
        """During a burst: the bells that rang meanwhile, and their keys' entries."""
        message = self.pubsub.get_message(timeout=0)
        while message is not None:
            self._take(message)
            message = self.pubsub.get_message(timeout=0)
        return self._collect()

    def _tidy(self) -> None:
        """Now and then: unsubscribe the keys nobody follows here any more; close when
        idle."""
        reader = self.reader
        now = time.monotonic()
        if now - self._tidied < IDLE:
            return
        self._tidied = now
        with self.send_lock:
            with reader.lock:
                gone = [k for k in self.subscribed
                        if k not in reader.feeds and k not in self.unconfirmed]
                self.subscribed.difference_update(gone)
                self.leaving.update(gone)
                for key in gone:
                    if reader.home.get(key) is self:
                        del reader.home[key]
                if self.subscribed or self.unconfirmed or self.leaving:
                    self._idle_since = now
                elif now - self._idle_since >= CLOSE_IDLE_AFTER:
                    self.closed = True
                    reader.forget_bells(self)
            for batch in reader.log.topology.xread_batches(gone):
                self.pubsub.sunsubscribe(*batch)

    def _failed(self, exc: BaseException) -> None:
        log.warning("redis doorbells of %s: %s; following its keys elsewhere",
                    self.node.name, exc)
        reader = self.reader
        with reader.lock:
            self.closed = True
            reader.forget_bells(self)
            keys = self.subscribed | set(self.unconfirmed) | self.moved_in | self.to_check
            reader.make_homeless(self, keys)
