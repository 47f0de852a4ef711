"""The seam between the streams and what runs them: greenlets under gevent, threads
otherwise.

gunicorn's gevent worker (the main target) monkey-patches the standard library, and
``gevent.pywsgi`` runs each request in a greenlet; there the gevent primitives are used
directly (``gevent.py``). Anywhere else (``flask run``, threaded WSGI servers, the test
client) threads are used (``threads.py``). Everything above this package reaches the
runtime through :func:`current` and the :class:`Concurrency` it returns, so only
``gevent.py`` knows gevent.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Protocol

from .gevent import (
    GEVENT,
    DirectSocket,
    EventLoop,
    active,
    native_lock,
    native_thread_ident,
    sockets_are_per_thread,
)
from .mailbox import END, CloseReason, DeliveryCounters, Mailbox, Sink, hand_off
from .sockets import client_socket, peer_closed, tune_socket
from .threads import THREADS

__all__ = [
    "END",
    "CloseReason",
    "Concurrency",
    "DeliveryCounters",
    "DirectSocket",
    "EventLoop",
    "Mailbox",
    "Sink",
    "Task",
    "client_socket",
    "current",
    "hand_off",
    "native_lock",
    "native_thread_ident",
    "peer_closed",
    "sockets_are_per_thread",
    "tune_socket",
]


class Task(Protocol):
    def stop(self, timeout: float) -> None:
        """Stop the task (interrupting it where it is blocked, if the runtime can) and
        wait up to ``timeout`` seconds for it to end."""

    def wait(self, timeout: float | None) -> bool:
        """Wait for the task to end; True if it has."""


class Concurrency(Protocol):
    name: str
    # True when one event loop runs every stream of this thread (gevent): hand-overs are
    # callbacks with no locks, and one timer can serve all streams.
    cooperative: bool

    def event_loop(self) -> EventLoop | None:
        """The loop running this thread's streams, or None (threads: there is none)."""

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> Task: ...

    def sleep(self, seconds: float) -> None: ...

    def new_mailbox(self, maxsize: int) -> Mailbox:
        """A mailbox of this runtime holding at most ``maxsize`` chunks."""

    def watch_eof(
        self, sock: Any, on_close: Callable[[], None], on_data: Callable[[], None]
    ) -> Callable[[], None] | None:
        """Watch ``sock`` for the peer leaving; a canceller, or None where the runtime
        cannot watch (threads poll :func:`peer_closed` instead)."""

    def direct_socket(self, sock: Any) -> DirectSocket | None:
        """Non-blocking writes to ``sock`` from any greenlet, or None where not possible."""

    def peer_closed(self, sock: Any) -> bool | None:
        """Whether the peer of ``sock`` has gone (see ``sockets.peer_closed``), without
        blocking."""

    def call_with_timeout(self, seconds: float, fn: Callable[[], Any]) -> Any:
        """``fn()``, or ``TimeoutError`` after ``seconds``."""


def current() -> Concurrency:
    """The runtime that fits the server running this request."""
    return GEVENT if active() else THREADS
