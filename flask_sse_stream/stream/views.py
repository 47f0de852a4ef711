"""``@sse_stream`` and the streaming response every route of the library returns."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar, cast, overload

from flask import Response, current_app, got_request_exception, request, stream_with_context

from .. import runtime
from ..runtime import END, Concurrency, Mailbox
from ..runtime.sockets import client_socket
from ..settings import settings_for
from ..wire.event import to_bytes
from .body import StreamBody
from .options import UNSET, StreamOptions
from .registry import registry_for
from .requests import STREAM_HEADERS, release_stream_slot, reserve_stream, take_stream_slot

__all__ = ["generator_response", "sse_stream", "stream_response"]

F = TypeVar("F", bound=Callable[..., Any])

GENERATOR_QUEUE = 32  # chunks a generator may run ahead of a slow client
STOP_TIMEOUT = 5.0  # seconds to wait for a generator's finally: when its client left
BODY_KEY = "flask_sse_stream.body"  # environ: the stream this request made
_orphan_watch: list[bool] = []  # the got_request_exception receiver, connected once


def stream_response(
    mailbox: Mailbox,
    options: StreamOptions,
    *,
    prelude: bytes = b"",
    on_close: Iterable[Callable[[], None]] = (),
    concurrency: Concurrency | None = None,
) -> Response:
    """A streaming response that writes what arrives in ``mailbox`` (``prelude`` first).
    It takes over the place :func:`reserve_stream` held for this request, if any."""
    environ = request.environ
    registry = registry_for(current_app)
    body = StreamBody(
        mailbox,
        options,
        registry,
        prelude=prelude,
        on_close=on_close,
        sock=client_socket(environ),
        concurrency=concurrency,
        reserved=take_stream_slot(environ, registry),
    )
    environ[BODY_KEY] = body
    _watch_for_orphans()
    response = Response(body, status=200, mimetype="text/event-stream")
    response.direct_passthrough = True
    headers = response.headers
    headers.update(STREAM_HEADERS)
    headers.update(options.headers)
    return response


def _watch_for_orphans() -> None:
    """Connect (once per process) the receiver that closes a stream whose request failed
    after the stream was made (an ``after_request`` handler raised): the server never
    gets, so never closes, that body."""
    if not _orphan_watch:
        _orphan_watch.append(True)
        got_request_exception.connect(_close_orphan, weak=False)


def _close_orphan(sender: Any, exception: BaseException, **extra: Any) -> None:
    try:
        environ = request.environ
    except RuntimeError:  # pragma: no cover - the signal is sent inside the request
        return
    release_stream_slot(environ)
    body = environ.pop(BODY_KEY, None)
    if body is not None:
        body.close()


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


def _hold() -> Iterator[bytes]:
    yield b""  # never resumed: closing it ends the hold on the request context


def generator_response(items: Iterator[Any], options: StreamOptions) -> Response:
    """Stream a view's generator: it runs in its own greenlet/thread, inside the request's
    context, and is closed (its ``finally:`` runs) as soon as the client leaves.

    The request context is held until the stream ends, as ``stream_with_context`` does
    (``teardown_request`` runs then): the hold is pushed here and popped by the body's
    close, both in the request's own greenlet; the producer sees ``request``, ``g`` and
    ``current_app`` through a copy of the context taken inside the hold."""
    conc = runtime.current()
    mailbox = conc.new_mailbox(GENERATOR_QUEUE)
    hold = cast("Generator[bytes, None, None]", stream_with_context(_hold()))
    next(hold)  # now inside the hold (the first step only records the contexts)
    task = conc.spawn(functools.partial(_produce, items, mailbox), contextvars.copy_context())

    def stop_producer() -> None:
        task.stop(STOP_TIMEOUT)

    return stream_response(mailbox, options, on_close=(stop_producer, hold.close),
                           concurrency=conc)


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
    heartbeat: float | None = UNSET,
    retry: int | None = UNSET,
    headers: dict[str, str] | None = None,
) -> F | Callable[[F], F]:
    """Make a view that returns (or is) a generator answer with a flushed SSE stream.

    The generator yields :class:`~flask_sse_stream.Event` objects, ``str``, ``bytes``
    (data) or JSON values; each reaches the client at once. A view may instead return
    any ordinary response (e.g. a 400 for bad input) and it is sent as is.
    ``heartbeat`` (seconds), ``retry`` (ms) and ``headers`` override
    ``SSE_HEARTBEAT_INTERVAL``, ``SSE_RETRY_MS`` and the default headers for this view.
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
            if heartbeat is UNSET and retry is UNSET and not headers:
                options = StreamOptions.for_app(current_app)
            else:
                options = StreamOptions(settings_for(current_app), heartbeat, retry, headers)
            return generator_response(rv, options)

        return wrapper  # type: ignore[return-value]

    return decorate(view) if view is not None else decorate
