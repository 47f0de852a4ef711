"""Generations decoupled from connections.

A generation (one model reply) runs in its own greenlet and appends each piece to a
per-generation log; responses *follow* that log. So a client that drops and comes back with
``Last-Event-ID: <stream_id>:<seq>`` gets exactly the pieces after ``seq`` and then the live
rest, and two tabs can follow one reply. Every entry is encoded once, with its id
``<stream_id>:<seq>``, and the same bytes go to every follower.

:class:`GenerationStore` is where logs live (memory here; Redis in ``redis_store``), and
:class:`Generations` is this process's view of the generations it runs: their tasks,
their followers, the grace period after the last follower left, cancellation.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..concurrency import Task
from ..concurrency import current as current_concurrency
from ..event import Event
from ..mailbox import CloseReason, Mailbox
from .backends import BackendError, ChatBackend, Finish, Usage

__all__ = [
    "Follow",
    "FollowStatus",
    "GenerationStore",
    "Generations",
    "MemoryGenerationStore",
]

log = logging.getLogger("flask_sse_stream.chat")


class FollowStatus(enum.Enum):
    LIVE = "live"  # prelude, then live entries until the close event
    FINISHED = "finished"  # the client already has the close event
    UNKNOWN = "unknown"  # never existed here, or expired


@dataclass
class Follow:
    status: FollowStatus
    prelude: bytes = b""
    stop: Callable[[], None] = field(default=lambda: None)


def encode_entry(stream_id: str, seq: int, data: dict[str, Any], event: str | None) -> bytes:
    return Event(data, event=event, id=f"{stream_id}:{seq}").encode()


class GenerationStore(ABC):
    """Per-generation logs with fan-out to followers."""

    @abstractmethod
    def create(self, stream_id: str, owner: str | None = None) -> None:
        """Start an empty log (run by this process) for the user ``owner``."""

    @abstractmethod
    def owner_of(self, stream_id: str) -> str | None:
        """The user a generation belongs to (None: no user, or unknown)."""

    @abstractmethod
    def append(self, stream_id: str, data: dict[str, Any], event: str | None = None) -> int:
        """Add an entry, hand it to the followers; returns its seq (from 1)."""

    @abstractmethod
    def finish(self, stream_id: str, data: dict[str, Any]) -> int:
        """Append the ``close`` event (returns its seq); followers' streams end after it."""

    @abstractmethod
    def follow(self, stream_id: str, after: int, mailbox: Mailbox) -> Follow:
        """Entries after ``after`` as a prelude, then live ones into ``mailbox``."""

    def exists(self, stream_id: str) -> bool:
        """Whether a log is known (anywhere the store reaches)."""
        return False

    def request_cancel(self, stream_id: str) -> bool:
        """Ask the process running ``stream_id`` to cancel it (it is not running here);
        False if the generation is unknown."""
        return False

    def has_remote_followers(self, stream_id: str) -> bool:
        """Whether clients on other processes follow ``stream_id``."""
        return False

    def on_remote_cancel(self, callback: Callable[[str], object]) -> None:
        """Register what to call when another process asks to cancel a generation."""
        return None

    def set_alias(self, name: str, stream_id: str | None) -> None:
        """Point ``name`` (e.g. an AI SDK chat id) at a running generation, or clear it.
        This default lives in this process; a shared store keeps it where every process
        sees it."""
        aliases: dict[str, str] = self.__dict__.setdefault("_aliases", {})
        if stream_id is None:
            aliases.pop(name, None)
        else:
            aliases[name] = stream_id

    def alias(self, name: str) -> str | None:
        """The generation ``name`` points at (None: none, or it was cleared)."""
        aliases: dict[str, str] = self.__dict__.get("_aliases", {})
        return aliases.get(name)

    def close(self) -> None:
        return None


class _Log:
    __slots__ = ("chunks", "done", "followers", "owner")

    def __init__(self, owner: str | None) -> None:
        self.owner = owner
        self.chunks: list[bytes] = []
        self.done = False
        self.followers: set[Mailbox] = set()


class MemoryGenerationStore(GenerationStore):
    """Logs in this process, kept ``retention`` seconds after they finish."""

    def __init__(self, retention: float = 300.0) -> None:
        self._retention = retention
        self._logs: dict[str, _Log] = {}
        self._expiry: deque[tuple[float, str]] = deque()
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

    def append(self, stream_id: str, data: dict[str, Any], event: str | None = None) -> int:
        with self._lock:
            entry = self._logs[stream_id]
            seq = len(entry.chunks) + 1
            chunk = encode_entry(stream_id, seq, data, event)
            entry.chunks.append(chunk)
            followers = list(entry.followers)
        for mailbox in followers:
            if not mailbox.offer(chunk):
                mailbox.close(CloseReason.OVERFLOW)  # it reconnects and resumes
        return seq

    def finish(self, stream_id: str, data: dict[str, Any]) -> int:
        seq = self.append(stream_id, data, event="close")
        with self._lock:
            entry = self._logs[stream_id]
            entry.done = True
            followers, entry.followers = entry.followers, set()
            self._expiry.append((time.monotonic() + self._retention, stream_id))
        for mailbox in followers:
            mailbox.close(CloseReason.FINISHED)
        return seq

    def follow(self, stream_id: str, after: int, mailbox: Mailbox) -> Follow:
        with self._lock:
            self._purge(time.monotonic())
            entry = self._logs.get(stream_id)
            if entry is None or after > len(entry.chunks):
                return Follow(FollowStatus.UNKNOWN)
            if entry.done and after >= len(entry.chunks):
                return Follow(FollowStatus.FINISHED)
            prelude = b"".join(entry.chunks[after:])
            if entry.done:
                mailbox.close(CloseReason.FINISHED)
                return Follow(FollowStatus.LIVE, prelude)
            entry.followers.add(mailbox)

        def stop() -> None:
            with self._lock:
                entry.followers.discard(mailbox)

        return Follow(FollowStatus.LIVE, prelude, stop)

    def exists(self, stream_id: str) -> bool:
        with self._lock:
            return stream_id in self._logs

    def entry(self, stream_id: str, seq: int) -> bytes:
        """The encoded entry ``seq`` (from 1) of a log of this process."""
        with self._lock:
            return self._logs[stream_id].chunks[seq - 1]


ANY_OWNER = object()  # cancel() from inside (grace period, shutdown): no owner check


class GenerationCancelled(Exception):
    """Raised inside a generation (thread mode) when it is cancelled."""


@dataclass
class _Running:
    task: Task | None = None
    followers: int = 0
    stop_reason: str | None = None  # "cancelled" or "shutdown" once asked to stop
    grace_timer: Any = None
    on_end: Callable[[], None] | None = None


class Generations:
    """The generations this process runs, on top of a store."""

    def __init__(self, store: GenerationStore, backend: ChatBackend, grace: float) -> None:
        self.store = store
        self.backend = backend
        self.grace = grace
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        store.on_remote_cancel(self._cancel_here)

    def __len__(self) -> int:
        return len(self._running)

    def start(
        self, stream_id: str, messages: list[dict[str, str]], owner: str | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        """Run the backend for ``messages`` in a new greenlet/thread, writing the log.
        ``on_end`` is called once the generation has ended, however it ends."""
        self.store.create(stream_id, owner)
        running = _Running(on_end=on_end)
        with self._lock:
            self._running[stream_id] = running
        concurrency = current_concurrency()
        running.task = concurrency.spawn(
            lambda: self._run(stream_id, messages, running), contextvars.Context()
        )

    def _run(self, stream_id: str, messages: list[dict[str, str]], running: _Running) -> None:
        close: dict[str, Any] = {"finish_reason": "stop"}
        pieces: Iterator[str | Usage | Finish] | None = None
        try:
            pieces = iter(self.backend.stream(messages))
            for piece in pieces:
                if running.stop_reason is not None:
                    raise GenerationCancelled  # thread mode: stop at the next piece
                if isinstance(piece, Usage):
                    close["usage"] = piece.as_dict()
                elif isinstance(piece, Finish):
                    close["finish_reason"] = piece.reason or "stop"
                elif piece:
                    self.store.append(stream_id, {"content": piece})
        except BackendError as exc:
            close = {"finish_reason": "error", "error": str(exc)}
        except (GenerationCancelled, _greenlet_exit()):
            if running.stop_reason == "shutdown":
                close = {"finish_reason": "error", "error": "the server restarted; try again"}
            else:
                close = {"finish_reason": "cancelled"}
        except Exception:
            log.exception("chat generation %s failed", stream_id)
            close = {"finish_reason": "error", "error": "internal error"}
        finally:
            if pieces is not None and hasattr(pieces, "close"):
                pieces.close()  # closes the upstream request at once
            try:
                self.store.finish(stream_id, close)
            except Exception:
                log.exception("could not finish chat generation %s", stream_id)
            with self._lock:
                self._running.pop(stream_id, None)
            if running.on_end is not None:
                try:
                    running.on_end()
                except Exception:
                    log.exception("chat generation %s: on_end failed", stream_id)

    def follow(
        self, stream_id: str, after: int, mailbox: Mailbox, owner: str | None = None
    ) -> Follow:
        """Follow a generation's log, counting followers for the grace period. Another
        user's generation is reported unknown: its id grants nothing."""
        if self.store.owner_of(stream_id) != owner:
            return Follow(FollowStatus.UNKNOWN)
        result = self.store.follow(stream_id, after, mailbox)
        running = self._running.get(stream_id)
        if result.status is not FollowStatus.LIVE or running is None:
            return result
        with self._lock:
            running.followers += 1
            if running.grace_timer is not None:
                running.grace_timer.cancel()
                running.grace_timer = None
        inner_stop = result.stop

        def stop() -> None:
            inner_stop()
            with self._lock:
                running.followers -= 1
                if running.followers == 0 and running.stop_reason is None:
                    running.grace_timer = _Timer(self.grace, self._grace_over, stream_id)

        result.stop = stop
        return result

    def _grace_over(self, stream_id: str) -> None:
        running = self._running.get(stream_id)
        if running is None or running.followers:
            return
        if self.store.has_remote_followers(stream_id):
            with self._lock:
                running.grace_timer = _Timer(self.grace, self._grace_over, stream_id)
            return
        log.info("chat generation %s has had no listener for %ss: cancelling", stream_id,
                 self.grace)
        self.cancel(stream_id, wait=False)

    def cancel(
        self, stream_id: str, *, wait: bool = True, reason: str = "cancelled",
        owner: object = ANY_OWNER,
    ) -> bool:
        """Stop a generation (its close event says ``reason``). False if unknown (or
        ``owner`` is given and the generation is someone else's)."""
        if owner is not ANY_OWNER and self.store.owner_of(stream_id) != owner:
            return False
        running = self._running.get(stream_id)
        if running is None:
            if self.store.request_cancel(stream_id):
                return True
            return self.store.exists(stream_id)  # known but finished: nothing to do
        if running.stop_reason is None:
            running.stop_reason = reason
        if running.task is not None:
            running.task.stop(2.0 if wait else 0.0)
        return True

    def _cancel_here(self, stream_id: str) -> None:
        """Another process asks to cancel ``stream_id``: only a generation running here is
        stopped, and asking further (``store.request_cancel``) never happens from here."""
        running = self._running.get(stream_id)
        if running is not None:
            if running.stop_reason is None:
                running.stop_reason = "cancelled"
            if running.task is not None:
                running.task.stop(0.0)

    def stop_all(self, reason: str = "shutdown") -> None:
        """End every generation of this process (server shutdown)."""
        for stream_id in list(self._running):
            self.cancel(stream_id, wait=True, reason=reason)


class _Timer:
    """A one-shot delayed call in a greenlet or thread."""

    def __init__(self, delay: float, fn: Callable[[str], None], arg: str) -> None:
        self._cancelled = False
        concurrency = current_concurrency()

        def run() -> None:
            concurrency.sleep(delay)
            if not self._cancelled:
                fn(arg)

        concurrency.spawn(run, contextvars.Context())

    def cancel(self) -> None:
        self._cancelled = True


def _greenlet_exit() -> type[BaseException]:
    try:
        from greenlet import GreenletExit
    except ImportError:  # pragma: no cover - gevent (and so greenlet) is a dependency
        return GenerationCancelled
    return GreenletExit  # type: ignore[no-any-return]
