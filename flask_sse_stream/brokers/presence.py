"""Presence: how many streams are subscribed to a channel, here and in every process that
shares the broker, and the ``event: presence`` messages that tell the streams when it
changes.

* **Local counts** are exact and immediate: a broker calls :meth:`Presence.join` when a
  subscription is made and :meth:`Presence.leave` when it closes.
* **Other processes** are counted by a :class:`Census` (``redis/presence.py``: per-process
  counts that expire). The memory broker has none: its channels live in one process.
* **Announcing.** A stream opens with the channel's count (:meth:`Presence.opening`).
  One loop per broker (a greenlet under gevent) runs every ``INTERVAL`` seconds while the
  process has subscribers. Each pass makes one census exchange (this process's changed
  counts out, the other processes' totals of the locally subscribed channels in: one
  round trip whatever the number of channels) and, for every channel whose count is not
  the one announced last, encodes one ``event: presence`` and hands the same bytes to
  each local subscriber that shows another count. However many joins arrive meanwhile, a
  stream gets at most one presence event per channel per pass, and none while the count
  stays the same.

Presence events carry no ``id:``: they are not history (a replay never holds them) and
do not move a single-channel stream's ``Last-Event-ID``. On a stream of several channels
``brokers/multichannel.py`` gives them the stream's cursor, which they leave unchanged.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from .. import runtime
from ..errors import BrokerError
from ..runtime import Mailbox, Sink, hand_off, native_lock
from ..wire.event import compact_json, encode_message

__all__ = ["INTERVAL", "Census", "Presence", "presence_event"]

log = logging.getLogger("flask_sse_stream")

INTERVAL = 1.0  # seconds between two passes: at most one presence event per channel each


class Census(Protocol):
    """What counts the streams of the other processes sharing a broker."""

    def exchange(self, counts: dict[str, int], changed: dict[str, int],
                 wanted: list[str]) -> dict[str, int]:
        """Store this process's counts (``counts``: all of them, ``changed``: those that
        changed since the last exchange, 0 for none left; a census that lost its copy
        stores all) and keep them alive; return the other processes' totals for
        ``wanted``. One round trip. Raises ``BrokerError``."""

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
        # the subscribers that opened with a presence event (only they get the others),
        # and, since the last pass, what each was told at its opening
        self._active: dict[str, dict[Sink, None]] = {}
        self._told: dict[str, dict[Sink, int]] = {}
        self._announced: dict[str, tuple[int, bytes]] = {}  # last count sent, encoded
        self._others: dict[str, int] = {}  # other processes' totals, as last exchanged
        self._pushed: dict[str, int] = {}  # this process's counts as the census has them
        self._priming: set[str] = set()  # channels whose first read is under way
        self._running = False
        self._wakeup: Mailbox | None = None  # the loop waits on it between passes

    # -- subscribers -----------------------------------------------------------------------

    def join(self, channel: str, sink: Sink) -> None:
        """Count ``sink`` as a subscriber of ``channel`` (now) and start the loop."""
        with self._lock:
            self._sinks.setdefault(channel, {})[sink] = None
            start = not self._running
            self._running = True
        if start:
            concurrency = runtime.current()
            self._wakeup = concurrency.new_mailbox(1)
            concurrency.spawn(self._run, contextvars.Context())

    def leave(self, channel: str, sink: Sink) -> None:
        """``sink`` stopped counting (its stream ended): at once, in this process."""
        with self._lock:
            sinks = self._sinks.get(channel)
            if sinks is None or sink not in sinks:
                return
            del sinks[sink]
            if not sinks:
                del self._sinks[channel]
            for table in (self._active, self._told):
                members: dict[Sink, Any] | None = table.get(channel)
                if members is not None and sink in members:
                    del members[sink]
                    if not members:
                        del table[channel]
            wakeup = None if self._sinks else self._wakeup
        if wakeup is not None:
            # the process's last stream ended (a shutdown drains them all): tell the
            # census now, not at the next pass, which a stopping process may not see
            wakeup.offer(b"w")

    # -- counts ----------------------------------------------------------------------------

    def count(self, channel: str) -> int:
        """The streams subscribed to ``channel`` everywhere: this process's now, the
        others' as the census has them now (one round trip with a census)."""
        with self._lock:
            local = len(self._sinks.get(channel, ()))
        if self.census is None:
            return local
        return local + self.census.read([channel]).get(channel, 0)

    def opening(self, channel: str, sink: Sink) -> bytes:
        """The presence event a new stream of ``channel`` opens with (it counts itself);
        from now on ``sink`` gets the channel's changes. Call it after the subscription
        that joined ``sink``, before the stream writes its prelude."""
        with self._lock:
            total = len(self._sinks.get(channel, ())) + self._others.get(channel, 0)
            announced = self._announced.get(channel)
            if sink in self._sinks.get(channel, ()):
                self._active.setdefault(channel, {})[sink] = None
                self._told.setdefault(channel, {})[sink] = total
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
        wakeup = self._wakeup
        assert wakeup is not None
        try:
            while self._pass():
                wakeup.take(INTERVAL)  # INTERVAL, or less when the last stream ended
        except BaseException:  # killed (shutdown) or a bug: the next join starts another
            with self._lock:
                self._running = False
            raise

    def _pass(self) -> bool:
        """One pass: exchange with the census, announce what changed. False when there
        is nothing left to do (no subscribers, the census has this process's zeros)."""
        with self._lock:
            counts = {channel: len(sinks) for channel, sinks in self._sinks.items()}
            told, self._told = self._told, {}
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
            with self._lock:  # only streams that get presence events need the others
                wanted = [c for c in counts if c in self._active]
            try:
                others = self.census.exchange(counts, changed, wanted)
            except BrokerError as exc:
                log.warning("presence: census exchange failed: %s", exc)
            else:
                with self._lock:
                    for channel, n in changed.items():
                        if n:
                            self._pushed[channel] = n
                        else:
                            self._pushed.pop(channel, None)
        self._announce(counts, told, others)
        return True

    def _announce(self, counts: dict[str, int], told: dict[str, dict[Sink, int]],
                  others: dict[str, int]) -> None:
        """Send each channel's count to the subscribers that show another one: after the
        last pass every subscriber shows the announced count, except those that opened
        since, which show what they were told (``told``)."""
        deliveries: list[tuple[bytes, list[Sink]]] = []
        with self._lock:
            # this pass's figures over the earlier ones (a channel first read by prime()
            # while the exchange ran keeps its figure); only for channels still here
            merged = {**self._others, **others}
            self._others = {c: n for c, n in merged.items() if c in counts}
            for channel in [c for c in self._announced if c not in counts]:
                del self._announced[channel]
            for channel in counts:
                active = self._active.get(channel)
                if not active:
                    continue
                total = len(self._sinks[channel]) + self._others.get(channel, 0)
                last = self._announced.get(channel)
                opened = told.get(channel, {})
                if last is None or last[0] != total:
                    targets = [s for s in active if opened.get(s, -1) != total]
                else:
                    targets = [s for s, n in opened.items() if n != total and s in active]
                if last is None or last[0] != total:
                    last = self._announced[channel] = (total, presence_event(channel, total))
                if targets and self.events:
                    deliveries.append((last[1], targets))  # encoded once per change
        for chunk, targets in deliveries:
            for target in targets:
                hand_off(target, chunk)
