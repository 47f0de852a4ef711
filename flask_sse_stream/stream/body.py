"""The WSGI body of one open stream.

It yields one chunk per wake-up: everything queued in its mailbox joined into one write,
or a heartbeat comment when nothing came for ``heartbeat`` seconds (under gevent the
registry's single timer puts it there; with threads the wait times out). What fills the
mailbox runs apart from the writer (a view's generator in its own greenlet or thread, a
broker, a chat log), so heartbeats flow while the producer is blocked, e.g. waiting for a
model's first token, and a client that leaves is noticed and its producer stopped at once.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import runtime
from ..runtime import END, CloseReason, Concurrency, Mailbox
from ..runtime.sockets import bytes_acked, tune_socket
from ..wire.event import encode_comment, encode_retry
from .direct import DirectWriter, ServerFraming
from .options import StreamOptions
from .registry import StreamRegistry
from .shutdown import watch_process

__all__ = ["HEARTBEAT", "OPENING", "StreamBody"]

log = logging.getLogger("flask_sse_stream")

HEARTBEAT = encode_comment("ping")
OPENING = encode_comment("ok")
# Endings after which the client is told to reconnect (and resume) soon.
_RECONNECT = frozenset({CloseReason.SHUTDOWN, CloseReason.EXPIRED, CloseReason.BROKER_LOST})


class StreamBody:
    """The WSGI iterable of one open stream (see the module docstring).

    A server integration that iterates the body itself may call :meth:`enable_direct`:
    then a chunk that reaches the mailbox while the writer is parked with nothing queued
    is written at once by whoever offers it (``direct.py``).
    """

    __slots__ = (
        "__weakref__",
        "_acked",
        "_cancel_watch",
        "_closed",
        "_concurrency",
        "_deadline",
        "_direct",
        "_finished",
        "_iterating_in",
        "_last_write",
        "_on_close",
        "_options",
        "_pending",
        "_registry",
        "_sock",
        "_watch_stopped",
        "_writing",
        "mailbox",
        "tick_interval",
    )

    def __init__(
        self,
        mailbox: Mailbox,
        options: StreamOptions,
        registry: StreamRegistry,
        *,
        prelude: bytes = b"",
        on_close: Iterable[Callable[[], None]] = (),
        sock: Any = None,
        concurrency: Concurrency | None = None,
        reserved: bool = False,
    ) -> None:
        self.mailbox = mailbox
        self._options = options
        self._registry = registry
        self._on_close = list(on_close)
        opening = encode_retry(options.retry) if options.retry is not None else OPENING
        self._pending: bytes | None = opening + prelude
        self._finished = False
        self._closed = False
        self._deadline: float | None = None
        if options.max_seconds:
            # jitter spreads the reconnects of streams that were opened together
            self._deadline = time.monotonic() + options.max_seconds * random.uniform(0.85, 1.0)
        self._sock = sock
        self._iterating_in = threading.get_ident()  # the request's thread (or greenlet)
        conc = self._concurrency = concurrency or runtime.current()
        # Under gevent the registry's one timer sends heartbeats, ends expired streams and
        # cuts writes that stay stuck (tick); with threads each wait has its own timeout.
        self.tick_interval: float | None = None
        write_timeout = options.write_timeout if sock is not None else None
        if conc.cooperative and (options.heartbeat or self._deadline or write_timeout):
            self.tick_interval = max(
                0.05, min(1.0, (options.heartbeat or 4.0) / 4, (write_timeout or 4.0) / 4)
            )
        self._last_write = time.monotonic()  # when the last chunk was handed to the server
        self._acked: int | None = None  # the peer's acknowledged bytes, while a write waits
        self._writing = False  # True from handing a chunk over until the server asks again
        self._direct: DirectWriter | None = None
        self._cancel_watch: Callable[[], None] | None = None
        self._watch_stopped = False  # the client sent bytes: the tick looks for its FIN
        if sock is not None:
            tune_socket(sock, options.heartbeat)
            # None: no event loop to watch it, so __next__ checks it at each heartbeat
            self._cancel_watch = conc.watch_eof(sock, self._peer_left, self._peer_sent)
        mailbox.owner = self
        registry.add(self, reserved=reserved)
        watch_process()

    # -- what others call ------------------------------------------------------------------

    def enable_direct(self, framing: ServerFraming) -> bool:
        """Let chunks that reach an idle writer go straight to the socket, framed by
        ``framing``: only for a server integration that iterates this body itself (no
        middleware can hold back or transform chunks). False where it cannot be done
        (threads, TLS, ``SSE_DIRECT_WRITE = False``)."""
        if not self._options.direct_write or self._closed or self._sock is None:
            return False
        if not self._concurrency.cooperative:
            return False
        direct_socket = self._concurrency.direct_socket(self._sock)
        if direct_socket is None:
            return False
        self._direct = DirectWriter(direct_socket, framing, self)
        self.mailbox.direct = self._direct.write
        return True

    def wrote(self, partial: bool) -> None:
        """A chunk went out directly (see ``direct.py``). While its tail waits, the stream
        counts as writing, so a client cut off as too slow or stuck past
        ``SSE_WRITE_TIMEOUT`` has its socket shut."""
        self._last_write = time.monotonic()
        if partial:
            self._writing = True
            self.mailbox.wake_reader()

    def tick(self, now: float) -> None:
        """Called by the registry's timer: a cut when a write has made no progress for
        ``SSE_WRITE_TIMEOUT``, a check for the FIN of a client that sent bytes, an end
        when expired, a heartbeat when idle."""
        if self._writing:
            self._check_progress(now)
            return  # a heartbeat would only queue behind the stuck write
        if self._watch_stopped and self._concurrency.peer_closed(self._sock):
            self._peer_left()
            return
        if self._deadline is not None and now >= self._deadline:
            self.mailbox.close(CloseReason.EXPIRED)
            return
        beat = self._options.heartbeat
        if beat is not None and now - self._last_write >= beat:
            self._last_write = now  # one ping per interval, however soon the writer runs
            self.mailbox.offer(HEARTBEAT)

    def _check_progress(self, now: float) -> None:
        """The write timeout runs from the last progress, not from the write's start: a
        big burst to a client that reads steadily but slowly is not cut. Progress is the
        peer acknowledging bytes (the kernel's count); where that cannot be read, the
        timeout runs from when the chunk was handed over."""
        timeout = self._options.write_timeout
        if timeout is None:
            return
        acked = bytes_acked(self._sock)
        if acked is not None and acked != self._acked:
            if self._acked is not None:
                self._last_write = now  # the client read some since the last look
            self._acked = acked
        if now - self._last_write >= timeout:
            self._cut()

    def mailbox_closed(self, reason: CloseReason) -> None:
        """The mailbox's first close. On an overflow the writer is stuck in a write to a
        client that does not read: cut the connection now so the write fails at once,
        rather than when the kernel gives up on the peer (``TCP_USER_TIMEOUT``)."""
        if reason is CloseReason.OVERFLOW and self._writing:
            self._cut()

    def shut(self, reason: CloseReason) -> None:
        """End the stream from outside (shutdown, lifetime, overflow)."""
        self.mailbox.close(reason)

    def _peer_left(self) -> None:
        self.mailbox.close(CloseReason.DISCONNECTED)

    def _peer_sent(self) -> None:
        self._watch_stopped = True

    def _cut(self) -> None:
        """Shut the socket down: a write blocked on it fails, the server ends the response
        and closes this body (which unsubscribes)."""
        self.mailbox.close(CloseReason.DISCONNECTED)
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- the WSGI iterable -----------------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return self._next()
        except StopIteration:
            # Ended: clean up now rather than only in close(), which a WSGI server always
            # calls but a test client's unclosed response never does (the view's request
            # context, held for the stream, would stay current in that thread).
            # Only in the request's own thread: the context can be popped only there.
            if threading.get_ident() == self._iterating_in:
                self.close()
            raise

    def _handing(self, chunk: bytes) -> bytes:
        self._last_write = time.monotonic()
        self._acked = None
        self._writing = True
        return chunk

    def _next(self) -> bytes:
        self._writing = False
        if self._pending is not None:
            chunk, self._pending = self._pending, None
            return self._handing(chunk)
        mailbox = self.mailbox
        while not self._finished:
            if mailbox.reason is not None:
                return self._finish(mailbox.reason, mailbox.drain())
            chunks = mailbox.take(self._wait_timeout())
            direct = self._direct
            if direct is not None and direct.tail is not None:
                self._writing = True
                flushed = direct.flush_tail()
                self._writing = False
                if not flushed:
                    return self._finish(CloseReason.DISCONNECTED, [])
            if chunks is None:
                idle = self._idle()
                if idle is not None:
                    return idle
                continue
            if chunks[-1] is END:
                chunks.pop()
                return self._finish(mailbox.reason or CloseReason.FINISHED, chunks)
            return self._handing(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        raise StopIteration

    def _wait_timeout(self) -> float | None:
        """How long ``take()`` waits: for ever under gevent (the tick sends heartbeats as
        chunks); with threads until the next heartbeat or the lifetime's end."""
        if self.tick_interval is not None:
            return None
        timeout = self._options.heartbeat
        if self._deadline is not None:
            remaining = max(0.0, self._deadline - time.monotonic())
            timeout = remaining if timeout is None else min(timeout, remaining)
        return timeout

    def _idle(self) -> bytes | None:
        """``take()`` came back empty (threads: a timeout): the heartbeat to write, or None
        to look again (the loop's top ends a closed or expired stream)."""
        if self.tick_interval is not None:
            return None
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.mailbox.close(CloseReason.EXPIRED)
            return None
        sock = self._sock
        if self._cancel_watch is None and sock is not None and self._concurrency.peer_closed(sock):
            self.mailbox.close(CloseReason.DISCONNECTED)
            return None
        if self._options.heartbeat is not None:
            return self._handing(HEARTBEAT)
        return None

    def _finish(self, reason: CloseReason, chunks: list[bytes]) -> bytes:
        self._finished = True
        if reason in _RECONNECT:
            # come back soon, with jitter, and continue from Last-Event-ID
            retry_ms = int(self._options.shutdown_retry * random.uniform(0.5, 1.5))
            chunks.append(encode_retry(retry_ms))
        elif reason is CloseReason.DISCONNECTED:
            chunks = []
        elif reason is CloseReason.OVERFLOW:
            # The client reads too slowly to take what is queued: writing it (or even the
            # response's last chunk) would block on it. Cut it; it reconnects and replays.
            self._cut()
            raise StopIteration
        if not chunks:
            raise StopIteration
        return self._handing(b"".join(chunks))

    def close(self) -> None:
        """Called by the WSGI server when the response ends, however it ends."""
        if self._closed:
            return
        self._closed = True
        self._finished = True
        self._writing = False
        self._direct = None
        self.mailbox.direct = None
        if self._cancel_watch is not None:
            self._cancel_watch()
        if self.mailbox.reason in _RECONNECT and self._sock is not None:
            # The client should come back on a new connection (possibly to another
            # worker): refuse keep-alive reuse so the server closes it right after the
            # response instead of waiting for a next request.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RD)
        self.mailbox.close(CloseReason.DISCONNECTED)
        self._registry.discard(self)
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one failing cleanup must not skip the others
                # the server may close a stream outside any app context: no current_app
                log.exception("error while closing an SSE stream")
        # Leave no reference cycle behind (mailbox -> owner -> mailbox, the EOF watcher's
        # canceller): a closed stream's objects are then freed at once by reference
        # counting, not by the next full garbage collection, whose pause grows with the
        # number of open streams (hundreds of ms at 10,000 on a slow core).
        self.mailbox.owner = None
        self._cancel_watch = None
