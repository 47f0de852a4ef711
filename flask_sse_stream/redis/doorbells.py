"""A Redis Cluster: one doorbell connection per primary; reads through the cluster client.

One ``XREAD`` cannot name keys of two hash slots, even on one node (``CROSSSLOT``), so
the one blocking read of a single server does not exist in a cluster. Instead every
append rings its key's doorbell (``SPUBLISH`` on the shard channel named like the key:
the same slot, so the same node and the same pipeline as the ``XADD``), and for each
primary the process holds one connection subscribed (``SSUBSCRIBE``) to the doorbells of
the keys it follows there. A bell marks its key dirty; the node's loop reads its dirty
keys, non-blocking, in one pipeline through the cluster client (one round trip to the
node; ``MOVED`` / ``ASK`` are followed by the client) and delivers them. Connections: one
per primary and process, whatever the number of keys.

**Joining** subscribes first and waits for the confirmation, then reads the stream's
end: an entry after that end rings a bell that is already subscribed, on the same node.

**Failures.** A doorbell connection that breaks (its node died), a read that fails, or a
doorbell the server takes back (``sunsubscribe``: its slot moved, by a failover or a
resharding) leaves its keys *homeless*. The reader's supervisor loop then reloads the
slot map (with back-off), subscribes them on the nodes that own them now, and each of
those checks the keys' positions on itself (``recovery.py``) before reading them.
After ``LOST_AFTER`` seconds homeless their followers are sent to reconnect.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import redis

from .. import runtime
from ..errors import BrokerError
from ..runtime import CloseReason
from .backoff import Backoff
from .connection import ERRORS, Node
from .errors import broker_error
from .feeds import Feed, Read
from .ids import text
from .reader import LOST_AFTER, READ_COUNT, Pending, Reader
from .recovery import lost_positions, server_ms

if TYPE_CHECKING:
    from .log import RedisLog

__all__ = ["DoorbellReader"]

log = logging.getLogger("flask_sse_stream.redis")

IDLE = 1.0  # seconds a node's loop waits for a bell before its housekeeping
CLOSE_IDLE_AFTER = 10.0  # a node's connection with no doorbell this long is closed


class _Closed(Exception):
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
                    raise _Closed
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
                    self.dirty.add(key)
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
        keys = self._take_dirty()
        if keys:
            reader._gather(self._read(keys), self._read_more, concurrency,
                           client=self._client())
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
        keys = self._take_dirty()
        return self._read(keys) if keys else []

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


class DoorbellReader(Reader):
    """A cluster's reader: :class:`NodeBells` per primary, and a supervisor loop that
    finds a new home for the keys of a node that failed or gave them up."""

    def __init__(self, owner: RedisLog) -> None:
        super().__init__(owner)
        self.bells: dict[Node, NodeBells] = {}
        self.home: dict[str, NodeBells] = {}  # key -> where its bells ring
        self.homeless: set[str] = set()
        self.homeless_since: dict[str, float] = {}
        self._wakeup = threading.Event()

    # -- joining ---------------------------------------------------------------------

    def _subscribe(self, feed: Feed) -> None:
        for _attempt in range(3):
            try:
                bells = self._bells_for(self.log.topology.node_of(feed.key))
                bells.subscribe([feed.key], check=False)
                break
            except _Closed:
                continue
            except ERRORS as exc:
                raise broker_error(exc) from exc
        self._ensure_running()
        if not feed.confirmed.wait(self.log.timeout):
            raise BrokerError("redis unavailable: the doorbell subscription was not confirmed")

    def _bells_for(self, node: Node) -> NodeBells:
        with self.lock:
            bells = self.bells.get(node)
            if bells is not None and not bells.closed:
                return bells
        bells = NodeBells(self, node)  # (makes no connection yet)
        with self.lock:
            found = self.bells.get(node)
            if found is not None and not found.closed:
                return found
            self.bells[node] = bells
        self._spawn(bells.run)
        return bells

    def _started(self, feed: Feed) -> None:
        with self.lock:
            bells = self.home.get(feed.key)
            ring = bells is not None and feed.key in bells.dirty  # rang before it was ready
        if ring and bells is not None:
            bells.ring()

    def _ensure_running(self) -> None:
        with self.lock:
            start = not self.running and not self._stopped
            if start:
                self.running = True
        if start:
            self._spawn(self._run)

    def _shutdown(self) -> None:
        with self.lock:
            bells = list(self.bells.values())
        for node_bells in bells:
            node_bells.close()
        self._wakeup.set()

    # -- homeless keys -----------------------------------------------------------------

    def forget_bells(self, bells: NodeBells) -> None:
        """(Under the lock.) ``bells`` is closed: new keys get a new connection."""
        if self.bells.get(bells.node) is bells:
            del self.bells[bells.node]

    def make_homeless(self, bells: NodeBells, keys: set[str]) -> None:
        """(Under the lock.) ``keys`` lost their doorbell on ``bells``: unsettle them and
        have the supervisor subscribe them where they live now."""
        now = time.monotonic()
        for key in keys:
            bells.subscribed.discard(key)
            bells.unconfirmed.pop(key, None)
            bells.moved_in.discard(key)
            bells.to_check.discard(key)
            bells.dirty.discard(key)
            if self.home.get(key) is bells:
                del self.home[key]
            feed = self.feeds.get(key)
            if feed is not None:
                feed.check = True
                feed.settled.clear()
                self.homeless.add(key)
                self.homeless_since.setdefault(key, now)
        self._wakeup.set()

    def _run(self) -> None:
        """The supervisor: re-home homeless keys (with back-off); end the followers of
        those homeless for LOST_AFTER; sweep idle command connections."""
        concurrency = runtime.current()
        backoff = Backoff()
        try:
            while True:
                with self.lock:
                    if not self.feeds or self._stopped:
                        self.running = False
                        return
                    keys = {k for k in self.homeless if k in self.feeds}
                    self.homeless.clear()
                if keys and self._rehome(keys):
                    concurrency.sleep(backoff.next_delay())
                    continue
                if keys:
                    backoff.reset()
                self._end_lost()
                self._wakeup.wait(IDLE)
                self._wakeup.clear()
                self.log.sweep_idle()
        except BaseException:
            with self.lock:
                self.running = False
            raise

    def _rehome(self, keys: set[str]) -> bool:
        """Subscribe ``keys`` on their owners now; True if some could not be (they stay
        homeless)."""
        topology = self.log.topology
        failed: set[str] = set()
        try:
            topology.refresh()
            groups = topology.group(keys)
        except ERRORS as exc:
            log.warning("redis reader: cannot reload the cluster's slots: %s", exc)
            failed, groups = set(keys), {}
        for node, owned in groups.items():
            try:
                self._bells_for(node).subscribe(owned, check=True)
            except (_Closed, *ERRORS) as exc:
                log.warning("redis reader: cannot subscribe on %s: %s", node.name, exc)
                failed.update(owned)
        with self.lock:
            self.homeless.update(k for k in failed if k in self.feeds)
        self._end_lost()
        return bool(failed)

    def _end_lost(self) -> None:
        now = time.monotonic()
        with self.lock:
            for key in [k for k in self.homeless_since if k not in self.feeds]:
                del self.homeless_since[key]
            lost = {k for k, since in self.homeless_since.items() if now - since >= LOST_AFTER}
            for key in lost:
                del self.homeless_since[key]
                self.homeless.discard(key)
        if lost:
            log.warning("redis reader: %d keys without a doorbell for %.0fs; ending their "
                        "streams (they reconnect)", len(lost), LOST_AFTER)
            self._end_all(CloseReason.BROKER_LOST, lost)
