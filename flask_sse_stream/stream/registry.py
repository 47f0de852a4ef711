"""Which streams are open in this process: for ``stats()``, ``SSE_MAX_STREAMS``, the one
heartbeat timer and shutdown."""

from __future__ import annotations

import contextvars
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .. import runtime
from ..runtime import CloseReason, Concurrency, native_lock

__all__ = ["StreamRegistry", "close_all_streams", "open_stream_count", "registry_for"]

REGISTRY_KEY = "flask_sse_stream.streams"  # app.extensions

log = logging.getLogger("flask_sse_stream")


class Closable(Protocol):
    tick_interval: float | None  # how often tick() is wanted; None: never

    def shut(self, reason: CloseReason) -> None: ...

    def tick(self, now: float) -> None: ...


class StreamRegistry:
    """The open streams of one Flask app in this process."""

    def __init__(self) -> None:
        self._streams: set[Closable] = set()
        self._reserved = 0  # places held by requests whose stream is not made yet
        self._lock = native_lock()  # reserve() is check-then-add (threads)
        self._on_shutdown: list[Callable[[], None]] = []
        self._tick = 1.0
        self._ticking = False
        _REGISTRIES.add(self)

    def __len__(self) -> int:
        """Open streams, counting the places held for streams being set up."""
        return len(self._streams) + self._reserved

    def reserve(self, limit: int) -> bool:
        """Hold a place for a stream about to be made, if fewer than ``limit`` are open or
        held: the cap counts a stream before its setup can block (e.g. on a broker)."""
        with self._lock:
            if len(self._streams) + self._reserved >= limit:
                return False
            self._reserved += 1
            return True

    def unreserve(self) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - 1)

    def add(self, stream: Closable, *, reserved: bool = False) -> None:
        """Register an open stream (taking over a place held by :meth:`reserve`)."""
        if reserved:
            self.unreserve()
        self._streams.add(stream)
        if stream.tick_interval is not None:
            self._tick = min(self._tick, stream.tick_interval)
            if not self._ticking:
                self._ticking = True
                concurrency = runtime.current()
                concurrency.spawn(lambda: self._tick_forever(concurrency), contextvars.Context())

    def _tick_forever(self, concurrency: Concurrency) -> None:
        """One timer for all streams (heartbeats, lifetimes) instead of a timeout in every
        stream's every wait: the hot path of a delivery starts and cancels no timer."""
        try:
            while self._streams:
                concurrency.sleep(self._tick)
                now = time.monotonic()
                for stream in list(self._streams):
                    stream.tick(now)
        finally:
            self._ticking = False

    def discard(self, stream: Closable) -> None:
        self._streams.discard(stream)

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at shutdown before the streams are ended (e.g. to write the
        last events of work in progress, so the clients still get them)."""
        self._on_shutdown.append(callback)

    def close_all(self, reason: CloseReason = CloseReason.SHUTDOWN) -> int:
        """End every open stream (each sends its last ``retry:`` hint); returns how many."""
        if reason is CloseReason.SHUTDOWN:
            for callback in self._on_shutdown:
                try:
                    callback()
                except Exception:
                    log.exception("shutdown callback failed")
        streams = list(self._streams)
        for stream in streams:
            stream.shut(reason)
        return len(streams)


# Every app's registry in this process, weakly: what lets one signal handler end the
# streams of every app.
_REGISTRIES: weakref.WeakSet[StreamRegistry] = weakref.WeakSet()


def registry_for(app: Any) -> StreamRegistry:
    """The open-stream registry of ``app`` (made on first use if ``SSE`` was not set up)."""
    registry = app.extensions.get(REGISTRY_KEY)
    if registry is None:
        registry = app.extensions[REGISTRY_KEY] = StreamRegistry()
    return registry  # type: ignore[no-any-return]


def close_all_streams(reason: CloseReason = CloseReason.SHUTDOWN) -> int:
    """End every open stream in this process (each gets a last ``retry:`` hint, so its
    client reconnects and resumes); call it when the server starts shutting down."""
    return sum(registry.close_all(reason) for registry in list(_REGISTRIES))


def open_stream_count() -> int:
    """Open streams of every app in this process (places held for streams included)."""
    return sum(len(registry) for registry in list(_REGISTRIES))
