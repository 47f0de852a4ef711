"""Other wire formats over the one generation log.

A generation's log holds each entry once, encoded as this project's own SSE event
(``chat/entries.py``), and the same bytes go to every follower, local or on another host
through Redis. A protocol that frames a reply differently (the AI SDK's UI message
chunks, OpenAI's ``chat.completion.chunk``) gets a :class:`Framer`: it reads an entry
back (``parse_entry``) and frames it for its wire. A shared framer caches what it made
per entry, so an entry is framed once per protocol, not once per follower; a
:class:`FramingSink` sits between the log and one follower's response and frames what
the log hands over.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

from ...runtime import CloseReason, Sink
from ..entries import Entry, parse_entry

__all__ = ["Framer", "FramingSink"]

_CACHE_SIZE = 4096


class Framer(ABC):
    """Frames log entries for one protocol. ``shared`` framers serve many followers and
    cache each entry's frame; a per-request framer (request options in the frames)
    frames the entries of its one follower."""

    def __init__(self, *, shared: bool = False) -> None:
        self._cache: dict[bytes, bytes] | None = {} if shared else None
        self._lock = threading.Lock()

    @abstractmethod
    def frame_entry(self, entry: Entry) -> bytes:
        """The bytes this protocol sends for ``entry``."""

    def opening(self, stream_id: str) -> bytes:
        """What a stream of this protocol starts with, before any entry."""
        return b""

    def frame(self, chunk: bytes) -> bytes:
        """``chunk`` (one log entry as the log encodes it) framed for this protocol."""
        cache = self._cache
        if cache is None:
            return self.frame_entry(parse_entry(chunk))
        framed = cache.get(chunk)
        if framed is None:
            framed = self.frame_entry(parse_entry(chunk))
            with self._lock:
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()  # followers of a live entry are served within moments
                cache[chunk] = framed
        return framed

    def frame_many(self, chunk: bytes) -> bytes:
        """Every entry in ``chunk`` framed: a replay, or a batch the log handed over at
        once (the Redis reader joins a burst's entries into one hand-over)."""
        if chunk.count(b"\n\n") <= 1:
            return self.frame(chunk)
        return b"".join(self.frame(part + b"\n\n") for part in chunk.split(b"\n\n")
                        if part.strip())


class FramingSink:
    """What the log hands to one follower, framed, into the response's own mailbox (a
    write-only sink: the response reads its mailbox, never this)."""

    __slots__ = ("_framer", "inner")

    def __init__(self, inner: Sink, framer: Framer) -> None:
        self.inner = inner
        self._framer = framer

    @property
    def reason(self) -> CloseReason | None:
        return self.inner.reason

    def offer(self, chunk: bytes) -> bool:
        framed = self._framer.frame_many(chunk)
        # an entry this protocol does not show frames to nothing, and b"" is the
        # mailbox's END: it must never be offered
        return self.inner.offer(framed) if framed else True

    def close(self, reason: CloseReason) -> None:
        self.inner.close(reason)
