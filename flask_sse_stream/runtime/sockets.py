"""The client's socket under a streaming response: finding it, tuning it, and telling
whether the peer has gone (no gevent here; the watcher that calls this is in ``gevent.py``).
"""

from __future__ import annotations

import select
import socket
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["bytes_acked", "client_socket", "peer_closed", "tune_socket"]

_POLL_CLOSED = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)


def client_socket(environ: dict[str, Any]) -> Any:
    """The connection's socket as the WSGI server exposes it, or None (a test client)."""
    for key in ("gunicorn.socket", "gunicorn.sock", "werkzeug.socket"):
        sock = environ.get(key)
        if sock is not None:
            return sock
    # gevent.pywsgi keeps the socket behind wsgi.input's file object
    rfile = getattr(environ.get("wsgi.input"), "rfile", None)
    return getattr(getattr(rfile, "raw", None), "_sock", None)


def tune_socket(sock: Any, heartbeat: float | None) -> None:
    """No Nagle delay for small events, and a dead peer (no FIN, no RST) evicted once
    writes stay unacknowledged for two heartbeats (at least 30 s)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            timeout_ms = int(max(30.0, 2 * (heartbeat or 15.0)) * 1000)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
    except (OSError, AttributeError):
        pass  # not a TCP socket (unix socket, test client): nothing to tune


def _fd(sock: Any) -> int:
    try:
        return int(sock.fileno())
    except (OSError, AttributeError, ValueError):
        return -1


def peer_closed(sock: Any, poll: Callable[[], Any] = select.poll) -> bool | None:
    """Non-blocking check of a client socket: True if the peer has shut its side (FIN),
    reset it or the socket failed, False if it sent bytes and is still connected (a
    pipelined request; under TLS also an alert not yet followed by FIN), None if nothing
    happened.

    It polls instead of reading (``POLLRDHUP`` reports the FIN even with unread bytes in
    front of it), so the same check serves plain TCP and TLS, whose records cannot be
    peeked at without consuming them: a client that sends ``close_notify`` then FIN, as
    curl, Go and Node do, is gone, not pipelining. ``poll`` makes the poller: under
    gevent the original one (gevent's own would wait in the hub, which a watcher's
    callback cannot).
    """
    fd = _fd(sock)
    if fd < 0:
        return True
    poller = poll()
    poller.register(fd, select.POLLIN | _POLL_CLOSED)
    try:
        events = poller.poll(0)
    except OSError:
        return True
    if not events:
        return None
    return bool(events[0][1] & _POLL_CLOSED)


_TCP_INFO = getattr(socket, "TCP_INFO", None)
_BYTES_ACKED = struct.Struct("=Q")  # struct tcp_info's tcpi_bytes_acked (Linux >= 4.1)
_BYTES_ACKED_AT = 120
_TCP_INFO_SIZE = 232


def bytes_acked(sock: Any) -> int | None:
    """How many bytes of this connection the peer has acknowledged (Linux's
    ``tcpi_bytes_acked``), or None where that cannot be read.

    A write that stays blocked while this number grows is a slow reader, not a stuck
    one: the peer acknowledges data only once its application read enough to open its
    window again (zero-window probes are answered without acknowledging new data).
    """
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, AttributeError, ValueError):
        return None
    if len(info) < _BYTES_ACKED_AT + _BYTES_ACKED.size:
        return None
    return int(_BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0])
