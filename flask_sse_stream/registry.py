"""Which streams are open in this process: for ``stats()``, ``SSE_MAX_STREAMS`` and shutdown."""

from __future__ import annotations

import weakref
from typing import Protocol

from .mailbox import CloseReason

__all__ = ["StreamRegistry", "close_all_streams"]


class Closable(Protocol):
    def shut(self, reason: CloseReason) -> None: ...


class StreamRegistry:
    """The open streams of one Flask app in this process."""

    def __init__(self) -> None:
        self._streams: set[Closable] = set()
        _REGISTRIES.add(self)

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: Closable) -> None:
        self._streams.add(stream)

    def discard(self, stream: Closable) -> None:
        self._streams.discard(stream)

    def close_all(self, reason: CloseReason = CloseReason.SHUTDOWN) -> int:
        """End every open stream (each sends its last ``retry:`` hint); returns how many."""
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
