"""Which streams are open in this process: for ``stats()``, ``SSE_MAX_STREAMS`` and shutdown."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Protocol

from .mailbox import CloseReason

__all__ = ["StreamRegistry", "close_all_streams"]

log = logging.getLogger("flask_sse_stream")


class Closable(Protocol):
    def shut(self, reason: CloseReason) -> None: ...


class StreamRegistry:
    """The open streams of one Flask app in this process."""

    def __init__(self) -> None:
        self._streams: set[Closable] = set()
        self._on_shutdown: list[Callable[[], None]] = []
        _REGISTRIES.add(self)

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: Closable) -> None:
        self._streams.add(stream)

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


# Only registries are tracked here (weakly): this is what lets one signal handler end the
# streams of every app in the process. No other state is process-global.
_REGISTRIES: weakref.WeakSet[StreamRegistry] = weakref.WeakSet()


def close_all_streams(reason: CloseReason = CloseReason.SHUTDOWN) -> int:
    """End every open stream in this process; call it when the server starts shutting down."""
    return sum(registry.close_all(reason) for registry in list(_REGISTRIES))
