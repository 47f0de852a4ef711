"""Direct writes: a chunk that reaches an idle stream is written to the client's socket at
once by whoever delivers it (the view's generator, the fan-out, the heartbeat timer),
instead of waking the stream's writer greenlet and going through the server.

Only a server integration that iterates the body itself can allow this (it knows that no
middleware sits between it and the body, and how it frames the bytes):
``contrib.gunicorn``'s worker class does, for gunicorn's chunked HTTP/1.1 bodies. The
framing and the byte count stay the server's, through :class:`ServerFraming`.
"""

from __future__ import annotations

from typing import Protocol

from ..runtime import DirectSocket

__all__ = ["DirectWriter", "ServerFraming", "WriterState"]


class ServerFraming(Protocol):
    """How the server frames one body chunk on the wire, and where it counts bytes."""

    def frame(self, chunk: bytes) -> bytes:
        """The bytes the server would send for ``chunk`` (e.g. an HTTP/1.1 chunk)."""

    def sent(self, size: int) -> None:
        """``size`` bytes of body were sent past the server (its access log counts them)."""


class WriterState(Protocol):
    """What the direct path tells the stream it writes for."""

    def wrote(self, partial: bool) -> None:
        """A chunk went out directly; ``partial``: its tail waits for the writer."""


class DirectWriter:
    """The direct path of one stream (see the module docstring).

    The mailbox calls :meth:`write` only while the writer is parked in ``take()`` with
    nothing queued: nothing is being written or waits to be, so order is kept. The chunk
    is framed as the server frames it and sent with one non-blocking ``write()``.
    Nothing taken (full buffer, failed socket): False, the writer's usual path handles it
    (and its errors). A second chunk in the same pass of the event loop (a generator
    yielding a burst without waiting): False too, so the writer joins the burst into one
    write instead of one ``write()`` per chunk. Part taken: the rest is :attr:`tail`, the
    writer's to send before anything else.
    """

    __slots__ = ("_framing", "_last_pass", "_socket", "_state", "tail")

    def __init__(self, sock: DirectSocket, framing: ServerFraming, state: WriterState) -> None:
        self._socket = sock
        self._framing = framing
        self._state = state
        self._last_pass = -1
        self.tail: bytes | None = None

    def write(self, chunk: bytes) -> bool:
        """Write ``chunk`` now; False to have it queued for the writer instead."""
        loop_pass = self._socket.iteration()
        if loop_pass == self._last_pass:
            return False
        self._last_pass = loop_pass
        frame = self._framing.frame(chunk)
        try:
            sent = self._socket.send(frame)
        except OSError:
            return False
        if not sent:
            return False
        self._framing.sent(len(chunk))
        partial = sent < len(frame)
        if partial:
            self.tail = frame[sent:]
        self._state.wrote(partial)
        return True

    def flush_tail(self) -> bool:
        """In the writer: send the rest of a partial write (waiting for the client).
        False if the socket failed or was shut (too slow, stuck, gone): the stream ends
        with no further byte, since nothing may follow half a frame."""
        tail, self.tail = self.tail, None
        if tail is None:
            return True
        try:
            self._socket.sendall(tail)
        except OSError:
            return False
        return True
