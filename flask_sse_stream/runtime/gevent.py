"""The runtime under gevent (gunicorn's gevent worker, ``gevent.pywsgi``): greenlets, one
event loop per thread, and a mailbox that costs a list and one waiter.

This is the only module that imports gevent (a hard dependency). Greenlets are used
directly (cheaper than patched ``threading``), and a greenlet can be killed while it is
blocked, which is how a silent generator is closed at once when its client leaves.

A ``gevent.queue.Queue`` and its three deques take 2.6 KiB; :class:`GeventMailbox` is a
plain list plus at most one waiting greenlet, about 200 bytes: per open stream, that is
most of the memory budget.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from typing import Any

import gevent
from gevent import Timeout, monkey
from gevent.hub import Waiter

from .mailbox import END, CloseReason, Mailbox
from .sockets import peer_closed

__all__ = [
    "GEVENT",
    "DirectSocket",
    "EventLoop",
    "GeventMailbox",
    "active",
    "native_lock",
    "native_thread_ident",
    "sockets_are_per_thread",
]

# threading.get_ident, patched, names the greenlet; this is the OS thread's.
_os_thread_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
# select.poll, patched, waits in the hub: a non-blocking check needs the original.
_poll: Callable[[], Any] = monkey.get_original("select", "poll")


def active() -> bool:
    """Whether this request runs under gevent (patched sockets, or inside a greenlet)."""
    return bool(monkey.is_module_patched("socket")) or isinstance(
        gevent.getcurrent(), gevent.Greenlet
    )


def native_thread_ident() -> int:
    """The OS thread's id (patched ``threading.get_ident`` names the greenlet)."""
    return _os_thread_ident()


def sockets_are_per_thread() -> bool:
    """Whether sockets belong to the thread that made them: gevent's patched sockets
    wait through their thread's hub, and another OS thread cannot use them."""
    return bool(monkey.is_module_patched("socket"))


def native_lock() -> threading.Lock:
    """A lock of the OS threads even when ``threading`` is monkey-patched: it serialises
    native threads (a threadpool publishing) against the hub's thread. Only for short
    sections that never yield."""
    allocate: Any = monkey.get_original("_thread", "allocate_lock")
    return allocate()  # type: ignore[no-any-return]


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


class _GreenletTask:
    __slots__ = ("greenlet",)

    def __init__(self, greenlet: Any) -> None:
        self.greenlet = greenlet

    def stop(self, timeout: float) -> None:
        # kill() raises GreenletExit where the task is blocked, so its finally: runs now.
        self.greenlet.kill(block=timeout > 0, timeout=timeout)

    def wait(self, timeout: float | None) -> bool:
        self.greenlet.join(timeout)
        return bool(self.greenlet.dead)


class _Gevent:
    name = "gevent"
    # One event loop runs every stream of this thread: hand-overs are callbacks with no
    # locks, and one timer can serve all streams.
    cooperative = True

    def event_loop(self) -> EventLoop:
        return EventLoop(gevent.get_hub())

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> _GreenletTask:
        return _GreenletTask(gevent.spawn(context.run, fn))

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)

    def new_mailbox(self, maxsize: int) -> Mailbox:
        return GeventMailbox(maxsize)

    def watch_eof(
        self, sock: Any, on_close: Callable[[], None], on_data: Callable[[], None]
    ) -> Callable[[], None] | None:
        """Call ``on_close`` (once) when the peer closes ``sock``, or ``on_data`` when it
        sends bytes instead (the watch then stops: the bytes stay unread); returns a
        canceller, or None if ``sock`` cannot be watched."""
        try:
            fd = sock.fileno()
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        watcher = gevent.get_hub().loop.io(fd, 1)  # 1 = EV_READ
        watcher.start(_EofCheck(sock, on_close, on_data, watcher))
        return watcher.close  # type: ignore[no-any-return]  # stops and releases it

    def direct_socket(self, sock: Any) -> DirectSocket | None:
        """Non-blocking writes to ``sock`` from any greenlet of this loop, or None where
        that is not possible (TLS, not a socket, a loop that cannot number its passes)."""
        if hasattr(sock, "do_handshake"):
            return None  # TLS: the bytes must go through the TLS layer
        try:
            fd = sock.fileno()
        except (OSError, AttributeError):
            return None
        if fd < 0 or os.get_blocking(fd):
            return None  # gevent keeps its sockets non-blocking at the OS level
        loop = gevent.get_hub().loop
        if not hasattr(loop, "iteration"):
            return None
        return DirectSocket(sock, fd, loop)

    def peer_closed(self, sock: Any) -> bool | None:
        """``sockets.peer_closed`` with the original poller."""
        return peer_closed(sock, _poll)

    def call_with_timeout(self, seconds: float, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in this greenlet and return its result, or raise ``TimeoutError``
        after ``seconds`` (interrupting it wherever it waits cooperatively).

        What interrupts ``fn`` is the ``gevent.Timeout`` itself, a ``BaseException``: an
        ``except Exception`` in ``fn`` (a tool retrying its request) cannot swallow the
        deadline. It becomes ``TimeoutError`` only once out of ``fn``."""
        timer = Timeout(seconds)
        timer.start()
        try:
            return fn()
        except Timeout as exc:
            if exc is not timer:
                raise  # another deadline, not this one
            raise TimeoutError(f"did not finish within {seconds:g} s") from None
        finally:
            timer.close()


GEVENT = _Gevent()


class DirectSocket:
    """Writes to a client socket without the writer greenlet.

    ``send`` is one non-blocking ``write()`` on the socket's descriptor (gevent keeps it
    non-blocking at the OS level), from whichever greenlet calls it (a producer, the
    fan-out loop, the heartbeat timer): it never switches. ``sendall`` is the blocking
    write of a greenlet that may wait (the stream's writer finishing a partly sent frame).
    ``iteration`` numbers the event loop's passes, so a stream can tell a burst (several
    chunks in one pass, better joined by its writer into one write) from chunks that come
    one at a time.
    """

    __slots__ = ("_fd", "_loop", "_sock")

    def __init__(self, sock: Any, fd: int, loop: Any) -> None:
        self._sock = sock
        self._fd = fd
        self._loop = loop

    def iteration(self) -> int:
        """The event loop's current pass (libev's ``ev_iteration``: O(1))."""
        return self._loop.iteration  # type: ignore[no-any-return]

    def send(self, data: bytes) -> int:
        """Bytes taken (0 if the socket's buffer is full); OSError if the socket failed."""
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``, waiting (this greenlet only) while the buffer is full."""
        self._sock.sendall(data)


class _EofCheck:
    """The EOF watcher's callback: a slotted object, smaller than a closure per stream."""

    __slots__ = ("on_close", "on_data", "sock", "watcher")

    def __init__(self, sock: Any, on_close: Callable[[], None], on_data: Callable[[], None],
                 watcher: Any) -> None:
        self.sock = sock
        self.on_close = on_close
        self.on_data = on_data
        self.watcher = watcher

    def __call__(self) -> None:
        closed = peer_closed(self.sock, _poll)
        if closed is None:
            return  # spurious wake-up
        self.watcher.stop()  # the watch is level-triggered: unread bytes would spin it
        if closed:
            self.on_close()
        else:
            self.on_data()


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


class GeventMailbox(Mailbox):
    """One slot, ``_waiter``, serves the reader blocked in ``take()`` and the producer
    blocked in ``put()``: they never wait at once (the reader waits only while the list is
    empty, the producer only while it is full), and both treat a wake-up as "look again".

    So "the slot is taken and nothing is queued" means exactly "the reader is parked in
    ``take()`` and nothing is being or waits to be written": then an ``offer`` may hand the
    chunk to ``direct`` instead of queueing it and waking the reader. Every wake-up and
    every timeout clears the slot, so a reader on its way back, or busy writing, never
    counts as parked."""

    __slots__ = ("_items", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self._items: list[bytes] = []
        self._maxsize = maxsize
        self._waiter: Any = None  # the Waiter of the one greenlet blocked on this mailbox

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            wake(waiter)

    def offer(self, chunk: bytes) -> bool:
        items = self._items
        if len(items) >= self._maxsize or self.reason is not None:
            return False
        if not items and self._waiter is not None and chunk:  # END never goes direct
            direct = self.direct
            if direct is not None and direct(chunk):
                return True
        items.append(chunk)
        self._wake()  # a waiting reader (no producer waits while there is room)
        return True

    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        while self.reason is None:
            if self.offer(chunk):
                return True
            waiter = self._waiter = Waiter()
            if not wait(waiter, timeout):
                if self._waiter is waiter:
                    self._waiter = None
                return False
        return False

    def wake_reader(self) -> None:
        self._wake()

    def close(self, reason: CloseReason) -> None:
        if self._closing(reason):
            self._items.append(END)  # past the bound on purpose: a close always gets through
        self._wake()

    def take(self, timeout: float | None) -> list[bytes] | None:
        if not self._items:
            if timeout == 0:
                return None
            waiter = self._waiter = Waiter()
            if not wait(waiter, timeout):
                if self._waiter is waiter:
                    self._waiter = None
                return None
            if not self._items:
                return None  # woken with nothing to take (drained meanwhile)
        chunks, self._items = self._items, []
        self._wake()  # a producer waiting for room
        if END in chunks:
            del chunks[chunks.index(END) + 1 :]
        return chunks

    def drain(self) -> list[bytes]:
        chunks, self._items = self._items, []
        return [c for c in chunks if c]
