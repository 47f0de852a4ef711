"""Generation logs in this process, kept ``retention`` seconds after they finish."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ...runtime import CloseReason, Sink, hand_off
from ..entries import encode_close, encode_entry
from ..parts import Part
from .base import Follow, FollowStatus, GenerationStore

__all__ = ["MemoryGenerationStore"]


class _Log:
    __slots__ = ("chunks", "done", "followers", "owner")

    def __init__(self, owner: str | None) -> None:
        self.owner = owner
        self.chunks: list[bytes] = []
        self.done = False
        self.followers: set[Sink] = set()


class MemoryGenerationStore(GenerationStore):
    """Every entry is encoded once, with its id ``<stream_id>:<seq>``, and the same bytes
    go to every follower."""

    def __init__(self, retention: float = 300.0) -> None:
        self._retention = retention
        self._logs: dict[str, _Log] = {}
        self._expiry: deque[tuple[float, str]] = deque()
        self._aliases: dict[str, str] = {}
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            self._logs.pop(self._expiry.popleft()[1], None)

    def create(self, stream_id: str, owner: str | None = None) -> None:
        with self._lock:
            self._purge(time.monotonic())
            self._logs[stream_id] = _Log(owner)

    def owner_of(self, stream_id: str) -> str | None:
        with self._lock:
            entry = self._logs.get(stream_id)
            return None if entry is None else entry.owner

    def _add(self, stream_id: str, encode: Callable[[int], bytes]) -> tuple[int, list[Sink]]:
        with self._lock:
            entry = self._logs[stream_id]
            seq = len(entry.chunks) + 1
            chunk = encode(seq)
            entry.chunks.append(chunk)
            followers = list(entry.followers)
        for sink in followers:
            hand_off(sink, chunk)  # a full queue is cut: it reconnects and resumes
        return seq, followers

    def append(self, stream_id: str, item: str | Part) -> int:
        return self._add(stream_id, lambda seq: encode_entry(stream_id, seq, item))[0]

    def finish(self, stream_id: str, close: dict[str, Any]) -> int:
        with self._lock:
            entry = self._logs[stream_id]
            if entry.done:  # finished already (a retried finish): nothing more
                return len(entry.chunks)
        seq, _ = self._add(stream_id, lambda seq: encode_close(stream_id, seq, close))
        with self._lock:
            entry = self._logs[stream_id]
            entry.done = True
            followers, entry.followers = entry.followers, set()
            self._expiry.append((time.monotonic() + self._retention, stream_id))
        for sink in followers:
            sink.close(CloseReason.FINISHED)
        return seq

    def follow(self, stream_id: str, after: int, sink: Sink) -> Follow:
        with self._lock:
            self._purge(time.monotonic())
            entry = self._logs.get(stream_id)
            if entry is None or after > len(entry.chunks):
                return Follow(FollowStatus.UNKNOWN)
            if entry.done and after >= len(entry.chunks):
                return Follow(FollowStatus.FINISHED)
            prelude = b"".join(entry.chunks[after:])
            if entry.done:
                sink.close(CloseReason.FINISHED)
                return Follow(FollowStatus.LIVE, prelude)
            entry.followers.add(sink)

        def stop() -> None:
            with self._lock:
                entry.followers.discard(sink)

        return Follow(FollowStatus.LIVE, prelude, stop)

    def exists(self, stream_id: str) -> bool:
        with self._lock:
            return stream_id in self._logs

    def entry(self, stream_id: str, seq: int) -> bytes:
        """The encoded entry ``seq`` (from 1) of a log of this process."""
        with self._lock:
            return self._logs[stream_id].chunks[seq - 1]

    def set_alias(self, name: str, stream_id: str) -> None:
        with self._lock:
            self._aliases[name] = stream_id

    def clear_alias(self, name: str, stream_id: str) -> None:
        with self._lock:
            if self._aliases.get(name) == stream_id:
                del self._aliases[name]

    def alias(self, name: str) -> str | None:
        with self._lock:
            return self._aliases.get(name)
