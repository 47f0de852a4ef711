"""Presence: how many streams are subscribed to a channel, here and in every process that
shares the broker, and the ``event: presence`` messages that tell the streams when it
changes.

* **Local counts** are exact and immediate: a broker calls :meth:`Presence.join` when a
  subscription is made and :meth:`Presence.leave` when it closes.
* **Other processes** are counted by a :class:`Census` (``redis/presence.py``: per-process
  counts that expire). The memory broker has none: its channels live in one process.
* **Announcing.** One loop per broker (a greenlet under gevent) runs every ``INTERVAL``
  seconds while the process has subscribers. Each pass makes one census exchange (this
  process's changed counts out, the other processes' totals of the locally subscribed
  channels in: one round trip whatever the number of channels) and, for every channel
  whose count changed (or that had joins or leaves here) since the last pass, encodes one
  ``event: presence`` and hands the same bytes to each local subscriber. However many
  joins arrive meanwhile, a stream gets at most one presence event per channel per pass.

Presence events carry no ``id:``: they are not history (a replay never holds them) and
do not move a single-channel stream's ``Last-Event-ID``. On a stream of several channels
``brokers/multichannel.py`` gives them the stream's cursor, which they leave unchanged.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from typing import Protocol

from .. import runtime
from ..errors import BrokerError
from ..runtime import Sink, hand_off, native_lock
from ..wire.event import compact_json, encode_message

__all__ = ["INTERVAL", "Census", "Presence", "presence_event"]

log = logging.getLogger("flask_sse_stream")

INTERVAL = 1.0  # seconds between two passes: at most one presence event per channel each


class Census(Protocol):
    """What counts the streams of the other processes sharing a broker."""

    def exchange(self, counts: dict[str, int], changed: dict[str, int]) -> dict[str, int]:
        """Store this process's counts (``counts``: all of them, ``changed``: those that
        changed since the last exchange, 0 for none left; a census that lost its copy
        stores all) and keep them alive; return the other processes' totals for the
        channels of ``counts``. One round trip. Raises ``BrokerError``."""

    def read(self, channels: Iterable[str]) -> dict[str, int]:
        """The other processes' totals for ``channels`` now. Raises ``BrokerError``."""


def presence_event(channel: str, count: int) -> bytes:
    """``event: presence`` with ``{"channel", "count"}`` (no id: it is not history)."""
    return encode_message(compact_json({"channel": channel, "count": count}), event="presence")


class Presence:
    """The local subscribers of one broker per channel, and the announcing loop."""

    def __init__(self, census: Census | None = None) -> None:
        self.census = census
        self.events = False  # SSE_PRESENCE: announce counts to the streams
        self._lock = native_lock()  # joins come from requests on any thread
        self._sinks: dict[str, dict[Sink, None]] = {}  # channel -> local subscribers
        self._dirty: set[str] = set()  # channels with joins or leaves since the last pass
        self._announced: dict[str, tuple[int, bytes]] = {}  # last count sent, encoded
        self._others: dict[str, int] = {}  # other processes' totals, as last exchanged
        self._pushed: dict[str, int] = {}  # this process's counts as the census has them
        self._priming: set[str] = set()  # channels whose first read is under way
        self._running = False

    # -- subscribers -----------------------------------------------------------------------

    def join(self, channel: str, sink: Sink) -> None:
        """Count ``sink`` as a subscriber of ``channel`` (now) and start the loop."""
        with self._lock:
            self._sinks.setdefault(channel, {})[sink] = None
            self._dirty.add(channel)
            start = not self._running
            self._running = True
        if start:
            runtime.current().spawn(self._run, contextvars.Context())

    def leave(self, channel: str, sink: Sink) -> None:
        """``sink`` stopped counting (its stream ended): at once, in this process."""
        with self._lock:
            sinks = self._sinks.get(channel)
            if sinks is None or sink not in sinks:
                return
            del sinks[sink]
            if not sinks:
                del self._sinks[channel]
            self._dirty.add(channel)

    def local_counts(self) -> dict[str, int]:
        with self._lock:
            return {channel: len(sinks) for channel, sinks in self._sinks.items()}

    # -- counts ----------------------------------------------------------------------------

    def count(self, channel: str) -> int:
        """The streams subscribed to ``channel`` everywhere: this process's now, the
        others' as the census has them now (one round trip with a census)."""
        with self._lock:
            local = len(self._sinks.get(channel, ()))
        if self.census is None:
            return local
        return local + self.census.read([channel]).get(channel, 0)

    def opening(self, channel: str) -> bytes:
        """The presence event a new stream of ``channel`` opens with (it counts itself):
        the last one announced if the count is the same, else a new one."""
        with self._lock:
            total = len(self._sinks.get(channel, ())) + self._others.get(channel, 0)
            announced = self._announced.get(channel)
        if announced is not None and announced[0] == total:
            return announced[1]
        return presence_event(channel, total)

    def prime(self, channels: list[str]) -> None:
        """Before a stream's opening events: learn the other processes' counts of the
        channels this process has no figure for yet (their first local subscriber), in
        one read, so that the first events are right. A failure leaves the local counts
        (the next pass corrects them)."""
        if self.census is None or not self.events:
            return
        with self._lock:
            # one read per channel, not per stream: those that open meanwhile start
            # with what is known, and the next pass announces the count to all
            unknown = [c for c in channels if c not in self._others and c not in self._priming]
            self._priming.update(unknown)
        if not unknown:
            return
        try:
            others = self.census.read(unknown)
        except BrokerError as exc:
            log.warning("presence: cannot read the counts of %r: %s", unknown, exc)
            return
        finally:
            with self._lock:
                self._priming.difference_update(unknown)
        with self._lock:
            for channel in unknown:
                self._others.setdefault(channel, others.get(channel, 0))

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        sleep = runtime.current().sleep
        try:
            while self._pass():
                sleep(INTERVAL)
        except BaseException:  # killed (shutdown) or a bug: the next join starts another
            with self._lock:
                self._running = False
            raise

    def _pass(self) -> bool:
        """One pass: exchange with the census, announce what changed. False when there
        is nothing left to do (no subscribers, the census has this process's zeros)."""
        with self._lock:
            counts = {channel: len(sinks) for channel, sinks in self._sinks.items()}
            dirty, self._dirty = self._dirty, set()
            changed: dict[str, int] = {}
            if self.census is not None:
                changed = {c: n for c, n in counts.items() if self._pushed.get(c, 0) != n}
                changed.update({c: 0 for c in self._pushed if c not in counts})
            if not counts and not changed:
                # decided under the lock: a join from now on starts a new loop
                self._announced.clear()
                self._others.clear()
                self._running = False
                return False
        others = self._others
        if self.census is not None:
            try:
                others = self.census.exchange(counts, changed)
            except BrokerError as exc:
                log.warning("presence: census exchange failed: %s", exc)
            else:
                with self._lock:
                    for channel, n in changed.items():
                        if n:
                            self._pushed[channel] = n
                        else:
                            self._pushed.pop(channel, None)
        self._announce(counts, dirty, others)
        return True

    def _announce(self, counts: dict[str, int], dirty: set[str], others: dict[str, int]) -> None:
        deliveries: list[tuple[bytes, list[Sink]]] = []
        with self._lock:
            self._others = {c: others.get(c, 0) for c in counts}
            for channel in [c for c in self._announced if c not in counts]:
                del self._announced[channel]
            for channel in counts:
                sinks = self._sinks.get(channel)
                if not sinks:
                    continue
                total = len(sinks) + self._others[channel]
                last = self._announced.get(channel)
                if last is not None and last[0] == total and channel not in dirty:
                    continue
                chunk = presence_event(channel, total)  # once per channel per change
                self._announced[channel] = (total, chunk)
                if self.events:
                    deliveries.append((chunk, list(sinks)))
        for chunk, targets in deliveries:
            for target in targets:
                hand_off(target, chunk)
