"""Generations decoupled from connections: a backend runs into a log that responses follow.

A generation (one model reply) runs in its own greenlet (a thread without gevent) and
appends each piece of text and each part to its log (``store/``); responses *follow* the
log. So a client that drops and comes back with ``Last-Event-ID: <stream_id>:<seq>`` gets
exactly the entries after ``seq`` and then the live rest, and two tabs can follow one
reply. :class:`Generations` is this process's view of the generations it runs: their
tasks, their followers, the grace period after the last follower left, cancellation, and
the hooks called when one ends.

**Every generation ends, exactly once.** Its state moves PENDING (started, its task has
not run yet) -> RUNNING (reading the backend) -> FINISHING (writing the close entry and
the bookkeeping) -> DONE, and only the generation's own task moves it. A cancel records
why; it interrupts the task (``GreenletExit`` where it waits) only while RUNNING, and
only once. So a cancel that comes before the task ran (a double submit, two tabs: the
later POST cancels the earlier reply at once) makes the task write ``cancelled`` as soon
as it starts, instead of killing a greenlet that never ran and so never ends; and a
second cancel (two DELETEs, the grace timer, a new POST) can never land in the middle of
the close write and skip the bookkeeping that frees the generation's cap.
"""

from __future__ import annotations

import contextvars
import enum
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import runtime
from ..errors import BrokerError
from ..runtime import Sink, Task
from .backends import BackendError, ChatBackend
from .parts import Data, Finish, Part, Reasoning, Source, ToolCall, ToolResult, Usage
from .store import Follow, FollowStatus, GenerationStore

__all__ = ["ANY_OWNER", "FinishedReply", "Generations", "OnFinish"]

log = logging.getLogger("flask_sse_stream.chat")

ANY_OWNER = object()  # cancel() from inside (grace period, shutdown): no owner check
_PARTS = (Reasoning, ToolCall, ToolResult, Data, Source)
_BACKEND_OPTIONS = ("tools", "tool_choice")


@dataclass(frozen=True)
class FinishedReply:
    """A reply that ended (finished, stopped or failed), as ``on_finish`` gets it.

    ``messages`` are what the backend got; ``parts`` are the text pieces (``str``) and
    parts in the order the backend yielded them, ``text`` the text joined;
    ``finish_reason`` is what the close event says (``"stop"``, ``"cancelled"``,
    ``"error"``, ``"tool_calls"``, the model's own); ``error`` the message of a failed
    reply; ``usage`` the backend's token counts. ``chat_id`` is the AI SDK chat id of the
    reply (None on the other protocols).
    """

    stream_id: str
    chat_id: str | None
    messages: list[dict[str, Any]]
    parts: list[str | Part]
    finish_reason: str
    error: str | None
    usage: dict[str, Any] | None

    @property
    def text(self) -> str:
        return "".join(part for part in self.parts if isinstance(part, str))


OnFinish = Callable[[FinishedReply], object]


class _State(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHING = "finishing"
    DONE = "done"


class GenerationCancelled(Exception):
    """Raised inside a generation (thread mode) when it is cancelled."""


@dataclass(eq=False)
class _Generation:
    stream_id: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    chat_id: str | None
    on_end: Callable[[], None] | None
    state: _State = _State.PENDING
    stop_reason: str | None = None  # "cancelled" or "shutdown" once asked to stop
    interrupted: bool = False  # the task was interrupted (at most once)
    task: Task | None = None
    followers: int = 0
    grace_timer: _Timer | None = None
    parts: list[str | Part] = field(default_factory=list)


class Generations:
    """The generations this process runs, on top of a store.

    ``stop_on_disconnect``: when the last follower of a running reply leaves, cancel it
    at once instead of after ``grace`` seconds (for clients that never resume).
    ``on_finish(reply)`` is called once per generation that ends, in its task, after its
    close entry was written.
    """

    def __init__(self, store: GenerationStore, backend: ChatBackend, grace: float, *,
                 stop_on_disconnect: bool = False, on_finish: OnFinish | None = None) -> None:
        self.store = store
        self.backend = backend
        self.grace = grace
        self.stop_on_disconnect = stop_on_disconnect
        self.on_finish = on_finish
        self._accepts = _accepted_options(backend)
        self._running: dict[str, _Generation] = {}
        self._lock = threading.Lock()
        store.on_remote_cancel(self._cancel_here)

    def __len__(self) -> int:
        return len(self._running)

    def start(
        self, stream_id: str, messages: list[dict[str, Any]], owner: str | None = None, *,
        options: dict[str, Any] | None = None, chat_id: str | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        """Run the backend for ``messages`` (and ``options`` such as ``tools``, passed on
        only to a backend whose ``stream`` accepts them) in a new task, writing the log.
        ``on_end`` is called once the generation has ended, however it ends."""
        self.store.create(stream_id, owner)
        given = {k: v for k, v in (options or {}).items() if k in self._accepts and v is not None}
        generation = _Generation(stream_id, messages, given, chat_id, on_end)
        with self._lock:
            self._running[stream_id] = generation
        generation.task = runtime.current().spawn(
            lambda: self._run(generation), contextvars.Context()
        )

    # -- the generation's own task ----------------------------------------------------------

    def _run(self, generation: _Generation) -> None:
        if generation.stop_reason is None:
            generation.state = _State.RUNNING
            close = self._read_backend(generation)
        else:
            close = _stopped(generation.stop_reason)  # cancelled before it ran
        generation.state = _State.FINISHING
        self._finish(generation, close)

    def _read_backend(self, generation: _Generation) -> dict[str, Any]:
        """Append what the backend yields; the close data. Catches everything, the
        interruption of a cancel included (``GreenletExit`` is a ``BaseException``)."""
        close: dict[str, Any] = {"finish_reason": "stop"}
        finish: str | None = None
        pending_calls: set[str] = set()  # tool calls without a result yet
        pieces: Iterator[Any] | None = None
        try:
            pieces = iter(self.backend.stream(generation.messages, **generation.options))
            for piece in pieces:
                if generation.stop_reason is not None:
                    raise GenerationCancelled  # thread mode: stop at the next piece
                if isinstance(piece, str):
                    if piece:
                        self._append(generation, piece)
                elif isinstance(piece, _PARTS):
                    if isinstance(piece, ToolCall):
                        pending_calls.add(piece.id)
                    elif isinstance(piece, ToolResult):
                        pending_calls.discard(piece.id)
                    self._append(generation, piece)
                elif isinstance(piece, Usage):
                    close["usage"] = piece.as_dict()
                elif isinstance(piece, Finish):
                    finish = piece.reason or None
                elif piece is not None:
                    raise TypeError(f"a chat backend yielded {type(piece).__name__}")
            close["finish_reason"] = finish or ("tool_calls" if pending_calls else "stop")
        except BackendError as exc:
            close = {"finish_reason": "error", "error": str(exc)}
        except BrokerError as exc:  # the log could not be written (Redis down or refusing)
            log.warning("chat generation %s: %s", generation.stream_id, exc)
            close = {"finish_reason": "error",
                     "error": "the event broker is unavailable; try again"}
        except Exception:
            if generation.stop_reason is not None:
                return _stopped(generation.stop_reason)
            log.exception("chat generation %s failed", generation.stream_id)
            close = {"finish_reason": "error", "error": "internal error"}
        except BaseException:  # the cancel's interruption (GreenletExit)
            return _stopped(generation.stop_reason or "cancelled")
        finally:
            generation.state = _State.FINISHING  # from here on a cancel changes nothing
            _close_quietly(pieces)  # closes the upstream request at once
        return close

    def _append(self, generation: _Generation, item: str | Part) -> None:
        self.store.append(generation.stream_id, item)
        generation.parts.append(item)

    def _finish(self, generation: _Generation, close: dict[str, Any]) -> None:
        """Write the close entry and do the bookkeeping, whatever happens meanwhile.

        An interruption scheduled while the task was still RUNNING may arrive here, in
        the write (at most once: see :meth:`_stop`); the store's ``finish`` is idempotent,
        so it is written again."""
        stream_id = generation.stream_id
        try:
            for attempt in (1, 2):
                try:
                    self.store.finish(stream_id, close)
                    break
                except BaseException:
                    if attempt == 2:
                        log.exception("could not finish chat generation %s", stream_id)
        finally:
            with self._lock:
                self._running.pop(stream_id, None)
                timer, generation.grace_timer = generation.grace_timer, None
            if timer is not None:
                timer.cancel()
            generation.state = _State.DONE
            _call("on_end", stream_id, generation.on_end)
            if self.on_finish is not None:
                reply = FinishedReply(
                    stream_id=stream_id, chat_id=generation.chat_id,
                    messages=generation.messages, parts=generation.parts,
                    finish_reason=str(close.get("finish_reason") or "stop"),
                    error=close.get("error"), usage=close.get("usage"),
                )
                _call("on_finish", stream_id, lambda: self.on_finish(reply))  # type: ignore[misc]

    # -- followers -------------------------------------------------------------------------

    def follow(self, stream_id: str, after: int, sink: Sink, owner: str | None = None) -> Follow:
        """Follow a generation's log, counting followers for the grace period. Another
        user's generation is reported unknown: its id grants nothing."""
        if self.store.owner_of(stream_id) != owner:
            return Follow(FollowStatus.UNKNOWN)
        result = self.store.follow(stream_id, after, sink)
        generation = self._running.get(stream_id)
        if result.status is not FollowStatus.LIVE or generation is None:
            return result
        with self._lock:
            generation.followers += 1
            timer, generation.grace_timer = generation.grace_timer, None
        if timer is not None:
            timer.cancel()
        inner_stop = result.stop

        def stop() -> None:
            inner_stop()
            with self._lock:
                generation.followers -= 1
                alone = generation.followers == 0 and generation.stop_reason is None
            if alone:
                self._left_alone(generation)

        result.stop = stop
        return result

    def _left_alone(self, generation: _Generation) -> None:
        if generation.state in (_State.FINISHING, _State.DONE):
            return
        if self.stop_on_disconnect and not self.store.has_remote_followers(
            generation.stream_id
        ):
            self.cancel(generation.stream_id, wait=False)
            return
        with self._lock:
            if generation.grace_timer is None and generation.followers == 0:
                generation.grace_timer = _Timer(self.grace, self._grace_over, generation)

    def _grace_over(self, generation: _Generation) -> None:
        with self._lock:
            generation.grace_timer = None
            if generation.followers or self._running.get(generation.stream_id) is not generation:
                return
        if self.store.has_remote_followers(generation.stream_id):
            self._left_alone(generation)  # ask again after another grace period
            return
        log.info("chat generation %s has had no listener for %ss: cancelling",
                 generation.stream_id, self.grace)
        self.cancel(generation.stream_id, wait=False)

    # -- stopping ----------------------------------------------------------------------------

    def cancel(
        self, stream_id: str, *, wait: bool = True, reason: str = "cancelled",
        owner: object = ANY_OWNER,
    ) -> bool:
        """Stop a generation (its close event says ``reason``). False if unknown (or
        ``owner`` is given and the generation is someone else's)."""
        if owner is not ANY_OWNER and self.store.owner_of(stream_id) != owner:
            return False
        generation = self._running.get(stream_id)
        if generation is None:
            if self.store.request_cancel(stream_id):
                return True
            return self.store.exists(stream_id)  # known but finished: nothing to do
        self._stop(generation, reason)
        if wait and generation.task is not None:
            generation.task.wait(2.0)
        return True

    def _stop(self, generation: _Generation, reason: str) -> None:
        """Record why; interrupt the task only while it reads the backend, and only once
        (see the module docstring)."""
        if generation.stop_reason is None:
            generation.stop_reason = reason
        if generation.state is _State.RUNNING and not generation.interrupted:
            generation.interrupted = True
            if generation.task is not None:
                generation.task.stop(0.0)

    def _cancel_here(self, stream_id: str) -> None:
        """Another process asks to cancel ``stream_id``: only a generation running here is
        stopped, and asking further (``store.request_cancel``) never happens from here."""
        generation = self._running.get(stream_id)
        if generation is not None:
            self._stop(generation, "cancelled")

    def stop_all(self, reason: str = "shutdown") -> None:
        """End every generation of this process (server shutdown)."""
        for stream_id in list(self._running):
            self.cancel(stream_id, wait=True, reason=reason)


def _stopped(reason: str) -> dict[str, Any]:
    if reason == "shutdown":
        return {"finish_reason": "error", "error": "the server restarted; try again"}
    return {"finish_reason": "cancelled"}


def _close_quietly(pieces: Iterator[Any] | None) -> None:
    """Close the backend's iterator (its ``finally:`` closes the upstream request). A
    late interruption landing here is absorbed: the generation still ends."""
    close = getattr(pieces, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.exception("closing a chat backend's stream failed")
    except BaseException:
        pass  # the cancel's interruption, delivered late


def _call(what: str, stream_id: str, fn: Callable[[], object] | None) -> None:
    if fn is None:
        return
    try:
        fn()
    except Exception:
        log.exception("chat generation %s: %s failed", stream_id, what)
    except BaseException:
        log.warning("chat generation %s: %s was interrupted", stream_id, what)


def _accepted_options(backend: ChatBackend) -> frozenset[str]:
    """Which of ``tools`` / ``tool_choice`` the backend's ``stream`` takes: a backend
    that takes only ``messages`` is called as before."""
    try:
        parameters = inspect.signature(backend.stream).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return frozenset(_BACKEND_OPTIONS)
    return frozenset(p.name for p in parameters if p.name in _BACKEND_OPTIONS)


class _Timer:
    """A one-shot delayed call in a task of its own."""

    def __init__(self, delay: float, fn: Callable[[_Generation], None],
                 arg: _Generation) -> None:
        self._cancelled = False
        concurrency = runtime.current()

        def run() -> None:
            concurrency.sleep(delay)
            if not self._cancelled:
                fn(arg)

        concurrency.spawn(run, contextvars.Context())

    def cancel(self) -> None:
        self._cancelled = True
