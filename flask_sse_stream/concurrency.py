"""Greenlets under gevent, threads otherwise: the few primitives the streams need.

gunicorn's gevent worker (the main target) monkey-patches the standard library, and
``gevent.pywsgi`` runs each request in a ``gevent.Greenlet``; in both cases the gevent
primitives are used directly (cheaper than patched ``threading``, and a greenlet can be
killed while it is blocked, which is how a silent generator is closed at once when its
client leaves). Anywhere else (``flask run``, threaded WSGI servers) threads are used, and a
blocked generator is stopped at its next yield.
"""

from __future__ import annotations

import contextvars
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Concurrency", "Task", "current", "peer_closed"]


class Task(Protocol):
    def stop(self, timeout: float) -> None:
        """Stop the task (interrupting it if it is blocked, where possible) and wait."""


class Concurrency(Protocol):
    name: str

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> Task: ...

    def sleep(self, seconds: float) -> None: ...

    def watch_eof(self, sock: Any, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``callback`` (once) when the peer closes ``sock``; return a canceller."""


# --------------------------------------------------------------------------- threads


class _ThreadTask:
    __slots__ = ("thread",)

    def __init__(self, fn: Callable[[], None], context: contextvars.Context) -> None:
        self.thread = threading.Thread(
            target=context.run, args=(fn,), daemon=True, name="sse-producer"
        )
        self.thread.start()

    def stop(self, timeout: float) -> None:
        # A thread cannot be interrupted: the producer sees the closed mailbox at its
        # next yield; wait for that (bounded).
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)


class _Threads:
    name = "threading"

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> Task:
        return _ThreadTask(fn, context)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def watch_eof(self, sock: Any, callback: Callable[[], None]) -> Callable[[], None] | None:
        return None  # threads poll with peer_closed() at each heartbeat instead


# --------------------------------------------------------------------------- gevent


class _GreenletTask:
    __slots__ = ("greenlet",)

    def __init__(self, greenlet: Any) -> None:
        self.greenlet = greenlet

    def stop(self, timeout: float) -> None:
        # kill() raises GreenletExit where the generator is blocked, so its finally: runs now.
        self.greenlet.kill(block=True, timeout=timeout)


class _Gevent:
    name = "gevent"

    def __init__(self) -> None:
        import gevent

        self._gevent = gevent

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> Task:
        return _GreenletTask(self._gevent.spawn(context.run, fn))

    def sleep(self, seconds: float) -> None:
        self._gevent.sleep(seconds)

    def watch_eof(self, sock: Any, callback: Callable[[], None]) -> Callable[[], None] | None:
        try:
            fd = sock.fileno()
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        watcher = self._gevent.get_hub().loop.io(fd, 1)  # 1 = EV_READ
        watcher.start(_EofCheck(sock, callback, watcher))
        return watcher.close  # type: ignore[no-any-return]  # stops and releases it


class _EofCheck:
    """The EOF watcher's callback: a slotted object, smaller than a closure per stream."""

    __slots__ = ("callback", "sock", "watcher")

    def __init__(self, sock: Any, callback: Callable[[], None], watcher: Any) -> None:
        self.sock = sock
        self.callback = callback
        self.watcher = watcher

    def __call__(self) -> None:
        closed = peer_closed(self.sock)
        if closed is None:
            return  # spurious wake-up
        self.watcher.stop()  # EOF, or the client sent bytes (pipelining): stop either way
        if closed:
            self.callback()


def peer_closed(sock: Any) -> bool | None:
    """Non-blocking check of a client socket: True if the peer closed it, False if it sent
    data, None if there is nothing to read yet."""
    raw = getattr(sock, "_sock", sock)  # gevent's socket wraps the real one
    try:
        data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return True
    return not data


_THREADS = _Threads()
_GEVENT: _Gevent | None = None


def current() -> Concurrency:
    """The primitives that fit the server running this request."""
    global _GEVENT
    if "gevent" not in sys.modules:
        return _THREADS
    import gevent
    from gevent import monkey

    if monkey.is_module_patched("socket") or isinstance(gevent.getcurrent(), gevent.Greenlet):
        if _GEVENT is None:
            _GEVENT = _Gevent()
        return _GEVENT
    return _THREADS
