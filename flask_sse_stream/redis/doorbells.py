"""A Redis Cluster: one doorbell connection per primary (``node_bells.py``), and a
supervisor for the keys whose node failed or gave them up.

One ``XREAD`` cannot name keys of two hash slots, even on one node (``CROSSSLOT``), so
the one blocking read of a single server does not exist in a cluster. Instead every
append rings its key's doorbell (``SPUBLISH`` on the shard channel named like the key:
the same slot, so the same node, in the same script as the ``XADD``), and for each
primary the process holds one connection subscribed (``SSUBSCRIBE``) to the doorbells of
the keys it follows there. A bell carries its entry and the id before it
(``bells.py``): when that id is the feed's position, the entry is delivered as it is;
otherwise (an empty bell, a break in the chain, a check pending) the bell marks its key
dirty, and the node's loop reads its dirty keys, non-blocking, in one pipeline on the
node's own client (never through the cluster client, which would follow a failover in
silence). Connections: one per primary and process, whatever the number of keys.

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
from typing import TYPE_CHECKING

from .. import runtime
from ..errors import BrokerError
from ..runtime import CloseReason
from .backoff import Backoff
from .connection import ERRORS, Node
from .errors import broker_error
from .feeds import Feed
from .node_bells import IDLE, Closed, NodeBells
from .reader import LOST_AFTER, Reader

if TYPE_CHECKING:
    from .log import RedisLog

__all__ = ["DoorbellReader"]

log = logging.getLogger("flask_sse_stream.redis")


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
        """Subscribe a new feed's doorbell and wait for the confirmation. A connection
        found dead (it may have died while idle) is replaced once, with the slot map
        reloaded. Raises BrokerError."""
        failed: BaseException | None = None
        for _attempt in range(3):
            try:
                if failed is not None:
                    self.log.topology.refresh()
                bells = self._bells_for(self.log.topology.node_of(feed.key))
                bells.subscribe([feed.key], check=False)
                break
            except Closed:
                continue
            except ERRORS as exc:
                if failed is not None:
                    raise broker_error(exc) from exc
                failed = exc
        else:
            raise BrokerError("redis unavailable: no doorbell connection")
        self._start_loop(self._run)
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
            bells.direct.pop(key, None)
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
            except (Closed, *ERRORS) as exc:
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
