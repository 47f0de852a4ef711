"""Turn a source of events into a flushed ``text/event-stream`` response.

The response body (:class:`StreamBody`) is the WSGI iterable. It yields one chunk per
wake-up: everything queued in its :class:`~.mailbox.Mailbox` joined into one write, or a
heartbeat comment when nothing came for ``heartbeat`` seconds (under gevent the registry's
single timer puts it there; with threads the wait times out). What fills the mailbox runs
apart from the writer (for ``@sse_stream`` views, the view's generator in its own greenlet
or thread), so heartbeats flow while the producer is blocked, e.g. waiting for a model's
first token, and a client that leaves can be noticed and the producer stopped at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, TypeVar, overload

from flask import Response, after_this_request, current_app, got_request_exception, jsonify, request
from flask.globals import request_ctx

from . import concurrency as _concurrency
from .event import encode_comment, encode_retry, to_bytes
from .mailbox import END, CloseReason, GeventMailbox, Mailbox, new_mailbox
from .registry import StreamRegistry
from .settings import DEFAULTS, settings_for

__all__ = [
    "DEFAULTS",  # moved to settings.py; kept importable from here
    "StreamBody",
    "StreamSettings",
    "last_event_id",
    "refuse_stream",
    "reserve_stream",
    "sse_stream",
    "stream_response",
]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("flask_sse_stream")

HEARTBEAT = encode_comment("ping")
OPENING = encode_comment("ok")
GENERATOR_QUEUE = 32  # chunks a generator may run ahead of a slow client
STOP_TIMEOUT = 5.0  # seconds to wait for a generator's finally: when its client left
REGISTRY_KEY = "flask_sse_stream.streams"
SETTINGS_KEY = "flask_sse_stream.default_settings"
SLOT_KEY = "flask_sse_stream.slot"  # environ: the registry holding this request's slot
BODY_KEY = "flask_sse_stream.body"  # environ: the stream this request made

_UNSET: Any = object()
_NO_HEADERS: dict[str, str] = {}  # shared, never mutated
# Endings after which the client is told to reconnect (and resume) soon.
_RECONNECT = frozenset({CloseReason.SHUTDOWN, CloseReason.EXPIRED, CloseReason.BROKER_LOST})


def last_event_id() -> str | None:
    """The client's ``Last-Event-ID`` for this request (header first, then the
    ``lastEventId`` query parameter, for clients that cannot set headers), or None."""
    value = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    return value or None


def registry_for(app: Any) -> StreamRegistry:
    """The open-stream registry of ``app`` (made on first use if ``SSE`` was not set up)."""
    registry = app.extensions.get(REGISTRY_KEY)
    if registry is None:
        registry = app.extensions[REGISTRY_KEY] = StreamRegistry()
    return registry  # type: ignore[no-any-return]


class StreamSettings:
    """Per-response settings, resolved from arguments and the app's config once.
    ``StreamSettings.default()`` is the shared instance for responses without overrides."""

    __slots__ = (
        "direct_write",
        "headers",
        "heartbeat",
        "max_seconds",
        "retry",
        "shutdown_retry",
        "write_timeout",
    )

    def __init__(
        self,
        heartbeat: float | None = _UNSET,
        retry: int | None = _UNSET,
        headers: dict[str, str] | None = None,
    ) -> None:
        config = settings_for(current_app)
        beat = config.heartbeat_interval if heartbeat is _UNSET else heartbeat
        self.heartbeat: float | None = float(beat) if beat else None
        self.retry: int | None = config.retry_ms if retry is _UNSET else retry
        self.headers = headers or _NO_HEADERS
        self.max_seconds: float | None = config.max_stream_seconds
        self.shutdown_retry: int = config.shutdown_retry_ms
        self.write_timeout: float | None = config.write_timeout
        self.direct_write: bool = config.direct_write

    @classmethod
    def default(cls) -> StreamSettings:
        """The app's settings without per-view overrides, made once per app (config is
        read at the first stream, as Flask expects it to be final by then)."""
        extensions = current_app.extensions
        settings = extensions.get(SETTINGS_KEY)
        if settings is None:
            settings = extensions[SETTINGS_KEY] = cls()
        return settings


def _wants_event_stream() -> bool:
    """A GET that names ``text/event-stream`` in Accept (``EventSource`` and the fetch
    clients do): it must get a 200, as any other status ends ``EventSource`` for good."""
    if request.method != "GET":
        return False
    return any(
        value.lower() == "text/event-stream" and quality > 0
        for value, quality in request.accept_mimetypes
    )


def refuse_stream(message: str, *, status: int = 503) -> Response:
    """Turn a client away so that it comes back later: a GET that accepts
    ``text/event-stream`` gets 200 with a jittered ``retry:`` line and an immediate end
    (``EventSource`` then reconnects); anything else gets JSON ``{"error"}`` with
    ``status`` and a jittered ``Retry-After``."""
    seconds = random.uniform(1.0, 5.0)
    if _wants_event_stream():
        response = Response(encode_retry(int(seconds * 1000)), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache, no-store, no-transform"
        response.headers["X-Accel-Buffering"] = "no"
        return response
    response = jsonify(error=message)
    response.status_code = status
    response.headers["Retry-After"] = str(max(1, round(seconds)))
    return response


def reserve_stream() -> Response | None:
    """Hold a place under ``SSE_MAX_STREAMS`` for this request's stream, before anything
    that may block (a broker subscribe): returns the refusal if the process is full, else
    None. The stream made by :func:`stream_response` takes the place over; if the request
    ends without one (a 4xx, an exception), the place is given back."""
    limit = settings_for(current_app).max_streams
    if limit is None:
        return None
    environ = request.environ
    if SLOT_KEY in environ:
        return None  # already holding one
    registry = registry_for(current_app)
    if not registry.reserve(limit):
        return refuse_stream("too many open streams on this server, retry later")
    environ[SLOT_KEY] = registry

    def give_back(response: Response) -> Response:
        release_stream_slot(environ)
        return response

    after_this_request(give_back)
    return None


def release_stream_slot(environ: dict[str, Any]) -> None:
    """Give back this request's unused place (no-op once its stream took it over)."""
    registry = environ.pop(SLOT_KEY, None)
    if registry is not None:
        registry.unreserve()


too_many_streams = reserve_stream  # the first release's name, used by the chat routes


def _orphaned(sender: Any, exception: BaseException, **extra: Any) -> None:
    """The request failed after its stream was made (an ``after_request`` handler raised):
    the server will never get, so never close, that stream. Close it here, so no
    registry entry, producer or pushed context is left behind."""
    try:
        environ = request.environ
    except RuntimeError:  # pragma: no cover - the signal is sent inside the request
        return
    release_stream_slot(environ)
    body = environ.pop(BODY_KEY, None)
    if body is not None:
        body.close()


got_request_exception.connect(_orphaned, weak=False)


def _client_socket(environ: dict[str, Any]) -> Any:
    for key in ("gunicorn.socket", "gunicorn.sock", "werkzeug.socket"):
        sock = environ.get(key)
        if sock is not None:
            return sock
    # gevent.pywsgi keeps the socket behind wsgi.input's file object
    rfile = getattr(environ.get("wsgi.input"), "rfile", None)
    return getattr(getattr(rfile, "raw", None), "_sock", None)


def _tune_socket(sock: Any, heartbeat: float | None) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            # A dead peer (no FIN, no RST) is evicted once writes stay unacknowledged.
            timeout_ms = int(max(30.0, 2 * (heartbeat or 15.0)) * 1000)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
    except (OSError, AttributeError):
        pass  # not a TCP socket (unix socket, test client): nothing to tune


def _gunicorn_response(caller: FrameType | None) -> Any:
    """gunicorn's ``Response`` for this request if ``caller`` is its async workers'
    request loop (``for item in respiter: resp.write(item)``) and the response is
    gunicorn's own class (whose chunk framing direct writes copy); else None."""
    if caller is None:
        return None
    code = caller.f_code
    if code.co_name != "handle_request" or not code.co_filename.replace("\\", "/").endswith(
        "gunicorn/workers/base_async.py"
    ):
        return None
    response = caller.f_locals.get("resp")
    kind = type(response)
    if kind.__name__ != "Response" or kind.__module__ != "gunicorn.http.wsgi":
        return None
    return response


def _direct_socket(
    environ: dict[str, Any], sock: Any, settings: StreamSettings, conc: _concurrency.Concurrency
) -> _concurrency.DirectSocket | None:
    """The socket this response may write its chunks to itself, or None (the WSGI path).

    Only on gunicorn's gevent worker (``gunicorn.socket`` is set by gunicorn's own HTTP
    handling, not by its gevent_pywsgi worker) over plain HTTP. Whether gunicorn frames
    this body as chunks (HTTP/1.1, not HEAD, no ``Content-Length``, not ``--protocol
    uwsgi``) is not guessed here: :meth:`StreamBody._arm_direct` reads gunicorn's own
    decision from its ``Response`` before the first direct write.
    """
    if not (
        settings.direct_write
        and conc.cooperative
        and sock is not None
        and environ.get("gunicorn.socket") is sock
        and str(environ.get("SERVER_SOFTWARE", "")).startswith("gunicorn")
        and environ.get("wsgi.url_scheme") == "http"
    ):
        return None
    return conc.direct_socket(sock)


class StreamBody:
    """The WSGI iterable of one open stream.

    With a ``direct`` socket (gunicorn's gevent worker, see :func:`_direct_socket`), a
    chunk that reaches the mailbox while the writer is parked with nothing queued is
    written at once by whoever offers it (:meth:`direct_write`), skipping the hand-over
    to the writer greenlet and the server's write path; the writer takes over whenever
    that is not possible or the loop is lagging.
    """

    __slots__ = (
        "__weakref__",
        "_cancel_watch",
        "_closed",
        "_deadline",
        "_direct",
        "_direct_pass",
        "_finished",
        "_gunicorn_response",
        "_iterating_in",
        "_last_write",
        "_on_close",
        "_pending",
        "_registry",
        "_settings",
        "_sock",
        "_tail",
        "_writing",
        "mailbox",
        "tick_interval",
    )

    def __init__(
        self,
        mailbox: Mailbox,
        settings: StreamSettings,
        registry: StreamRegistry,
        *,
        prelude: bytes = b"",
        on_close: Iterable[Callable[[], None]] = (),
        sock: Any = None,
        concurrency: _concurrency.Concurrency | None = None,
        reserved: bool = False,
        direct: _concurrency.DirectSocket | None = None,
    ) -> None:
        self.mailbox = mailbox
        self._settings = settings
        self._registry = registry
        self._on_close = list(on_close)
        opening = encode_retry(settings.retry) if settings.retry is not None else OPENING
        self._pending: bytes | None = opening + prelude
        self._finished = False
        self._closed = False
        self._deadline: float | None = None
        if settings.max_seconds:
            # jitter spreads the reconnects of streams that were opened together
            self._deadline = time.monotonic() + settings.max_seconds * random.uniform(0.85, 1.0)
        self._cancel_watch: Callable[[], None] | None = None
        self._sock = sock
        self._iterating_in = threading.get_ident()  # the request's thread (or greenlet)
        conc = concurrency or _concurrency.current()
        # Under gevent the registry's one timer sends heartbeats, ends expired streams and
        # cuts writes that stay stuck (tick); with threads each wait has its own timeout.
        self.tick_interval: float | None = None
        write_timeout = settings.write_timeout if sock is not None else None
        if conc.cooperative and (settings.heartbeat or self._deadline or write_timeout):
            self.tick_interval = max(
                0.05, min(1.0, (settings.heartbeat or 4.0) / 4, (write_timeout or 4.0) / 4)
            )
        self._last_write = time.monotonic()  # when the last chunk was handed to the server
        self._writing = False  # True from handing a chunk over until the server asks again
        self._tail: bytes | None = None  # the unsent rest of a partial direct write
        self._direct = None
        self._direct_pass = -1  # the event loop pass of the last direct write
        self._gunicorn_response: Any = None  # gunicorn's Response, while writing direct
        if direct is not None and isinstance(mailbox, GeventMailbox):
            self._direct = direct  # armed by the first __next__, once gunicorn is the caller
        if sock is not None:
            _tune_socket(sock, settings.heartbeat)
            # None: no event loop to watch it, so __next__ checks it at each heartbeat
            self._cancel_watch = conc.watch_eof(sock, self._peer_left)
        mailbox.owner = self
        registry.add(self, reserved=reserved)

    def tick(self, now: float) -> None:
        """Called by the registry's timer: a heartbeat when idle, an end when expired, a
        cut when the server has been stuck writing one chunk for ``SSE_WRITE_TIMEOUT``
        (the peer stopped reading: its window is zero)."""
        if self._writing:
            timeout = self._settings.write_timeout
            if timeout is not None and now - self._last_write >= timeout:
                self._cut()
            return  # a heartbeat would only queue behind the stuck write
        if self._deadline is not None and now >= self._deadline:
            self.mailbox.close(CloseReason.EXPIRED)
            return
        beat = self._settings.heartbeat
        if beat is not None and now - self._last_write >= beat:
            self._last_write = now  # one ping per interval, however soon the writer runs
            self.mailbox.offer(HEARTBEAT)

    def direct_write(self, chunk: bytes) -> bool:
        """Write ``chunk`` now, from the caller (a producer, the fan-out, the heartbeat
        timer); False to have it queued for the writer instead.

        The mailbox calls this only while the writer is parked in ``take()`` with nothing
        queued: nothing is being written or waits to be, so order is kept. The chunk is
        framed as gunicorn frames it and sent with one non-blocking ``send()``. Nothing
        taken (full buffer, failed socket): False, the writer's usual path handles it (and
        its errors). A second chunk in the same pass of the event loop (a generator that
        yields a burst without waiting): False too, so the writer joins the burst into one
        write instead of one ``send()`` per chunk. Part taken: the rest is the writer's,
        woken to send it before anything else; meanwhile the stream counts as writing, so
        a client cut off as too slow or stuck past ``SSE_WRITE_TIMEOUT`` has its socket shut.
        """
        direct = self._direct
        if direct is None:
            return False
        loop_pass = direct.iteration()
        if loop_pass == self._direct_pass:
            return False
        self._direct_pass = loop_pass
        frame = b"%X\r\n%s\r\n" % (len(chunk), chunk)
        try:
            sent = direct.send(frame)
        except OSError:
            return False
        if not sent:
            return False
        self._last_write = time.monotonic()
        self._gunicorn_response.sent += len(chunk)  # its access log's byte count
        if sent < len(frame):
            self._tail = frame[sent:]
            self._writing = True
            self.mailbox.wake_reader()  # type: ignore[attr-defined]  # a GeventMailbox
        return True

    def _arm_direct(self, caller: FrameType | None) -> None:
        """Allow direct writes only when gunicorn's own loop iterates this body and
        gunicorn itself decided to frame it as chunks.

        A WSGI middleware or a wrapper set by an ``after_request`` in between may
        transform or hold back chunks (compression, buffering): a chunk written past it
        would arrive unencoded or ahead of the ones it holds. And the framing is read from
        gunicorn's own ``Response`` (set by its ``start_response``, before this first
        chunk is asked for), not inferred from the environ: gunicorn sends some bodies
        unframed (``--protocol uwsgi``, where nginx frames them), and a subclass may frame
        differently."""
        response = _gunicorn_response(caller)
        mailbox = self.mailbox
        if (
            response is not None
            and response.chunked is True
            and response.sock is self._sock
            and isinstance(mailbox, GeventMailbox)
        ):
            self._gunicorn_response = response
            mailbox.direct = self.direct_write
        else:
            self._direct = None

    def _flush_tail(self) -> bool:
        """In the writer: send the rest of a partial direct write (waiting for the
        client). False if the socket failed or was shut (too slow, stuck, gone): the
        stream ends with no further byte, since nothing may follow half a frame."""
        tail, self._tail = self._tail, None
        direct = self._direct
        if tail is None or direct is None:
            return True
        self._writing = True
        try:
            direct.sendall(tail)
        except OSError:
            return False
        finally:
            self._writing = False
        return True

    def _peer_left(self) -> None:
        self.mailbox.close(CloseReason.DISCONNECTED)

    def mailbox_closed(self, reason: CloseReason) -> None:
        """The mailbox's first close. On an overflow the writer is stuck in a write to a
        client that does not read: cut the connection now so the write fails at once,
        rather than when the kernel gives up on the peer (``TCP_USER_TIMEOUT``)."""
        if reason is CloseReason.OVERFLOW and self._writing:
            self._cut()

    def _cut(self) -> None:
        """Shut the socket down: a write blocked on it fails, the server ends the response
        and closes this body (which unsubscribes)."""
        self.mailbox.close(CloseReason.DISCONNECTED)
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def shut(self, reason: CloseReason) -> None:
        """End the stream from outside (shutdown, lifetime, overflow)."""
        self.mailbox.close(reason)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return self._next()
        except StopIteration:
            # Ended: clean up now rather than only in close(), which a WSGI server always
            # calls but a test client's unclosed response never does (the view's request
            # context, pushed again for the stream, would stay current in that thread).
            # Only in the request's own thread: the context can be popped only there.
            if threading.get_ident() == self._iterating_in:
                self.close()
            raise

    def _next(self) -> bytes:
        self._writing = False
        if self._pending is not None:
            chunk, self._pending = self._pending, None
            if self._direct is not None:
                self._arm_direct(sys._getframe(2))  # whoever called __next__
            self._writing = True
            return chunk
        mailbox = self.mailbox
        heartbeat = self._settings.heartbeat
        while not self._finished:
            if mailbox.reason is not None:
                return self._finish(mailbox.reason, mailbox.drain())
            if self.tick_interval is not None:
                chunks = mailbox.take(None)  # heartbeats arrive as chunks, from tick()
                if self._tail is not None and not self._flush_tail():
                    return self._finish(CloseReason.DISCONNECTED, [])
                if chunks is None:
                    continue  # (only a timeout returns None)
            else:
                timeout = heartbeat
                if self._deadline is not None:
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        mailbox.close(CloseReason.EXPIRED)
                        continue
                    timeout = remaining if timeout is None else min(timeout, remaining)
                chunks = mailbox.take(timeout)
                if self._tail is not None and not self._flush_tail():
                    return self._finish(CloseReason.DISCONNECTED, [])
                if chunks is None:
                    sock = self._sock
                    if (
                        self._cancel_watch is None
                        and sock is not None
                        and _concurrency.peer_closed(sock)
                    ):
                        return self._finish(CloseReason.DISCONNECTED, [])
                    if heartbeat is not None and timeout == heartbeat:
                        self._last_write = time.monotonic()
                        self._writing = True
                        return HEARTBEAT
                    continue  # woken by the lifetime deadline: the loop's top ends it
            if chunks[-1] is END:
                chunks.pop()
                return self._finish(mailbox.reason or CloseReason.FINISHED, chunks)
            self._last_write = time.monotonic()
            self._writing = True
            return b"".join(chunks) if len(chunks) > 1 else chunks[0]
        raise StopIteration

    def _finish(self, reason: CloseReason, chunks: list[bytes]) -> bytes:
        self._finished = True
        if reason in _RECONNECT:
            # come back soon, with jitter, and continue from Last-Event-ID
            retry_ms = int(self._settings.shutdown_retry * random.uniform(0.5, 1.5))
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
        self._last_write = time.monotonic()
        self._writing = True
        return b"".join(chunks)

    def close(self) -> None:
        """Called by the WSGI server when the response ends, however it ends."""
        if self._closed:
            return
        self._closed = True
        self._finished = True
        self._writing = False
        self._direct = None
        self._gunicorn_response = None
        if isinstance(self.mailbox, GeventMailbox):
            self.mailbox.direct = None
        if self._cancel_watch is not None:
            self._cancel_watch()
        if self.mailbox.reason in _RECONNECT and self._sock is not None:
            # The client should come back on a new connection (possibly to another
            # worker): refuse keep-alive reuse so the server closes it right after the
            # response instead of waiting for a next request (gunicorn's shutdown waits
            # for that too).
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


def stream_response(
    mailbox: Mailbox,
    settings: StreamSettings,
    *,
    prelude: bytes = b"",
    on_close: Iterable[Callable[[], None]] = (),
    concurrency: _concurrency.Concurrency | None = None,
) -> Response:
    """A streaming response that writes what arrives in ``mailbox``. It takes over the
    place :func:`reserve_stream` held for this request, if any."""
    environ = request.environ
    registry = registry_for(current_app)
    reserved = environ.get(SLOT_KEY) is registry
    if reserved:
        del environ[SLOT_KEY]
    sock = _client_socket(environ)
    conc = concurrency or _concurrency.current()
    body = StreamBody(
        mailbox,
        settings,
        registry,
        prelude=prelude,
        on_close=on_close,
        sock=sock,
        concurrency=conc,
        reserved=reserved,
        direct=_direct_socket(environ, sock, settings, conc),
    )
    environ[BODY_KEY] = body
    response = Response(body, status=200, mimetype="text/event-stream")
    response.direct_passthrough = True
    headers = response.headers
    headers["Cache-Control"] = "no-cache, no-store, no-transform"
    headers["X-Accel-Buffering"] = "no"
    headers.update(settings.headers)
    return response


def _produce(items: Iterator[Any], mailbox: Mailbox) -> None:
    """Run a view's generator, handing each encoded item to the writer."""
    try:
        for item in items:
            if mailbox.reason is not None:
                return
            if item is None:
                continue
            chunk = to_bytes(item)
            while not mailbox.put(chunk, timeout=1.0):
                if mailbox.reason is not None:
                    return
    except Exception:
        current_app.logger.exception("SSE stream generator failed; ending the stream")
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
        while mailbox.reason is None and not mailbox.put(END, timeout=1.0):
            pass


def generator_response(items: Iterator[Any], settings: StreamSettings) -> Response:
    """Stream a view's generator: it runs in its own greenlet/thread, inside the request's
    context, and is closed (its ``finally:`` runs) as soon as the client leaves."""
    conc = _concurrency.current()
    mailbox = new_mailbox(conc, GENERATOR_QUEUE)
    # Keep the request context alive until the stream ends, as stream_with_context does:
    # the extra push defers teardown_request; the producer sees request/g/current_app
    # through a copy of this context.
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    ctx.push()
    task = conc.spawn(functools.partial(_produce, items, mailbox), contextvars.copy_context())

    def stop_producer() -> None:
        task.stop(STOP_TIMEOUT)

    return stream_response(mailbox, settings, on_close=(stop_producer, ctx.pop), concurrency=conc)


def _is_stream(rv: Any) -> bool:
    return hasattr(rv, "__next__") and not isinstance(rv, (str, bytes, Response))


@overload
def sse_stream(view: F) -> F: ...


@overload
def sse_stream(
    *,
    heartbeat: float | None = ...,
    retry: int | None = ...,
    headers: dict[str, str] | None = ...,
) -> Callable[[F], F]: ...


def sse_stream(
    view: F | None = None,
    *,
    heartbeat: float | None = _UNSET,
    retry: int | None = _UNSET,
    headers: dict[str, str] | None = None,
) -> F | Callable[[F], F]:
    """Make a view that returns (or is) a generator answer with a flushed SSE stream.

    The generator yields :class:`~.event.Event` objects, ``str``, ``bytes`` (data) or JSON
    values; each reaches the client at once. A view may instead return any ordinary
    response (e.g. a 400 for bad input) and it is sent as is. ``heartbeat`` (seconds),
    ``retry`` (ms) and ``headers`` override ``SSE_HEARTBEAT_INTERVAL``, ``SSE_RETRY_MS``
    and the default headers for this view.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            refusal = reserve_stream()
            if refusal is not None:
                return refusal
            rv = fn(*args, **kwargs)
            if not _is_stream(rv):
                return rv  # an ordinary response: the held place is given back after it
            settings = (
                StreamSettings.default()
                if heartbeat is _UNSET and retry is _UNSET and not headers
                else StreamSettings(heartbeat, retry, headers)
            )
            return generator_response(rv, settings)

        return wrapper  # type: ignore[return-value]

    return decorate(view) if view is not None else decorate
