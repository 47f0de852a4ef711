"""Greenlets under gevent, threads otherwise: the few primitives the streams need.

gunicorn's gevent worker (the main target) monkey-patches the standard library, and
``gevent.pywsgi`` runs each request in a ``gevent.Greenlet``; in both cases the gevent
primitives are used directly (cheaper than patched ``threading``, and a greenlet can be
killed while it is blocked, which is how a silent generator is closed at once when its
client leaves). Anywhere else (``flask run``, threaded WSGI servers) threads are used, and a
blocked generator is stopped at its next yield.

This is the only module that imports gevent (a hard dependency): the mailbox and the
memory broker reach the event loop through :class:`EventLoop`, :func:`wait` and
:func:`wake`.
"""

from __future__ import annotations

import _socket
import contextvars
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import gevent
from gevent import Timeout, monkey
from gevent.hub import Waiter

__all__ = [
    "Concurrency",
    "DirectSocket",
    "EventLoop",
    "Task",
    "Waiter",
    "current",
    "native_lock",
    "peer_closed",
    "wait",
    "wake",
]


class Task(Protocol):
    def stop(self, timeout: float) -> None:
        """Stop the task (interrupting it if it is blocked, where possible) and wait."""


class Concurrency(Protocol):
    name: str
    # True when one event loop runs every stream of this thread (gevent): hand-overs are
    # callbacks with no locks, and one timer can serve all streams.
    cooperative: bool

    def event_loop(self) -> EventLoop | None:
        """The loop running this thread's streams, or None (threads: there is none)."""

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> Task: ...

    def sleep(self, seconds: float) -> None: ...

    def watch_eof(self, sock: Any, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``callback`` (once) when the peer closes ``sock``; return a canceller."""

    def direct_socket(self, sock: Any) -> DirectSocket | None:
        """Non-blocking writes to ``sock`` from any greenlet of this loop, or None where
        that is not possible (threads, TLS, not a socket)."""


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
    cooperative = False

    def event_loop(self) -> EventLoop | None:
        return None

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> Task:
        return _ThreadTask(fn, context)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def watch_eof(self, sock: Any, callback: Callable[[], None]) -> Callable[[], None] | None:
        return None  # threads poll with peer_closed() at each heartbeat instead

    def direct_socket(self, sock: Any) -> DirectSocket | None:
        return None


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
    cooperative = True

    def event_loop(self) -> EventLoop | None:
        return EventLoop(gevent.get_hub())

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> Task:
        return _GreenletTask(gevent.spawn(context.run, fn))

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)

    def watch_eof(self, sock: Any, callback: Callable[[], None]) -> Callable[[], None] | None:
        try:
            fd = sock.fileno()
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        watcher = gevent.get_hub().loop.io(fd, 1)  # 1 = EV_READ
        watcher.start(_EofCheck(sock, callback, watcher))
        return watcher.close  # type: ignore[no-any-return]  # stops and releases it

    def direct_socket(self, sock: Any) -> DirectSocket | None:
        raw = getattr(sock, "_sock", None)  # gevent's socket wraps the real one
        if not isinstance(raw, _socket.socket) or hasattr(sock, "do_handshake"):
            return None  # not a plain socket, or TLS (the bytes must go through it)
        loop = gevent.get_hub().loop
        if not hasattr(loop, "iteration"):
            return None  # a loop that cannot say which iteration it is in: the writer's path
        return DirectSocket(sock, raw, loop)


class DirectSocket:
    """Writes to a client socket without the writer greenlet (gevent only).

    ``send`` is one non-blocking ``send()`` on the OS socket under gevent's wrapper, from
    whichever greenlet calls it (a producer, the fan-out loop, the heartbeat timer): it
    never switches. ``sendall`` is the blocking write of a greenlet that may wait (the
    stream's writer finishing a partly sent frame). ``iteration`` numbers the event
    loop's passes, so a stream can tell a burst (several chunks in one pass, better
    joined by its writer into one write) from chunks that come one at a time.
    """

    __slots__ = ("_loop", "_raw", "_sock")

    def __init__(self, sock: Any, raw: _socket.socket, loop: Any) -> None:
        self._sock = sock
        self._raw = raw
        self._loop = loop

    def iteration(self) -> int:
        """The event loop's current pass (libev's ``ev_iteration``: O(1))."""
        return self._loop.iteration  # type: ignore[no-any-return]

    def send(self, data: bytes) -> int:
        """Bytes taken (0 if the socket's buffer is full); OSError if the socket failed."""
        try:
            return self._raw.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``, waiting (this greenlet only) while the buffer is full."""
        self._sock.sendall(data)


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


class EventLoop:
    """One gevent hub's loop, as the memory broker and the mailbox need it."""

    __slots__ = ("_loop", "thread_ident")

    def __init__(self, hub: Any) -> None:
        self._loop = hub.loop
        self.thread_ident: int = hub.thread_ident

    def in_thread(self) -> bool:
        """True on the thread this loop runs on (callbacks and timers may be added)."""
        return _os_thread_ident() == self.thread_ident

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` in the loop after ``delay`` seconds (this loop's thread only)."""
        timer = self._loop.timer(delay)
        timer.start(_fire_once, timer, fn, args)

    def call_soon_threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` in the loop soon; callable from any thread (a native thread
        of a threadpool, a C callback), which wakes the loop."""
        self._loop.run_callback_threadsafe(fn, *args)


def _fire_once(timer: Any, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    timer.close()
    fn(*args)


# threading.get_ident, patched, names the greenlet; this is the OS thread's.
_os_thread_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")


def wake(waiter: Waiter) -> None:
    """Resume the greenlet blocked in ``wait(waiter)``: scheduled in the hub, as
    ``Waiter.switch`` must not run from another greenlet directly."""
    gevent.get_hub().loop.run_callback(waiter.switch, None)


def wait(waiter: Waiter, timeout: float | None) -> bool:
    """Block this greenlet until ``waiter`` is woken; False on timeout."""
    if timeout is None:
        waiter.get()
        return True
    with Timeout(timeout, False):
        waiter.get()
        return True
    return False


def native_lock() -> threading.Lock:
    """A lock of the OS threads even when ``threading`` is monkey-patched: it serialises
    native threads (a threadpool publishing) against the hub's thread. Only for short
    sections that never yield."""
    allocate: Any = monkey.get_original("_thread", "allocate_lock")
    return allocate()  # type: ignore[no-any-return]


def peer_closed(sock: Any) -> bool | None:
    """Non-blocking check of a client socket: True if the peer closed it, False if it sent
    data, None if there is nothing to read yet."""
    raw = getattr(sock, "_sock", sock)  # gevent's socket wraps the real one
    if isinstance(raw, ssl.SSLSocket):
        return _tls_peer_closed(raw)
    try:
        data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return True
    except (ValueError, TypeError):  # not a plain socket: cannot tell
        return None
    return not data


def _tls_peer_closed(raw: ssl.SSLSocket) -> bool | None:
    """``SSLSocket.recv`` takes no flags: peek at the TCP bytes under TLS on a duplicate of
    the descriptor instead (a close_notify alert or pipelined bytes count as "sent data")."""
    if raw.pending():
        return False
    try:
        fd = raw.fileno()
        if fd < 0:
            return True
        if not select.select([fd], [], [], 0)[0]:
            return None
        with socket.fromfd(fd, raw.family, raw.type) as dup:
            data = dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except (OSError, ValueError):
        return True
    return not data


_THREADS = _Threads()
_GEVENT: _Gevent | None = None


def current() -> Concurrency:
    """The primitives that fit the server running this request."""
    global _GEVENT
    if monkey.is_module_patched("socket") or isinstance(gevent.getcurrent(), gevent.Greenlet):
        if _GEVENT is None:
            _GEVENT = _Gevent()
        return _GEVENT
    return _THREADS
