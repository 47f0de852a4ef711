"""What a streaming route needs from the request: the client's position, whether it is an
``EventSource``, and a place under ``SSE_MAX_STREAMS`` held before anything can block."""

from __future__ import annotations

import random
from typing import Any

from flask import Response, after_this_request, current_app, request

from ..errors import json_error
from ..settings import settings_for
from ..wire.event import encode_retry
from .registry import StreamRegistry, registry_for

__all__ = [
    "SLOT_KEY",
    "last_event_id",
    "refuse_stream",
    "release_stream_slot",
    "reserve_stream",
    "wants_event_stream",
]

SLOT_KEY = "flask_sse_stream.slot"  # environ: the registry holding this request's place
STREAM_HEADERS = {"Cache-Control": "no-cache, no-store, no-transform", "X-Accel-Buffering": "no"}


def last_event_id() -> str | None:
    """The client's ``Last-Event-ID`` for this request (header first, then the
    ``lastEventId`` query parameter, for clients that cannot set headers), or None."""
    value = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    return value or None


def wants_event_stream() -> bool:
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
    if wants_event_stream():
        response = Response(encode_retry(int(seconds * 1000)), mimetype="text/event-stream")
        response.headers.update(STREAM_HEADERS)
        return response
    return json_error(message, status, headers={"Retry-After": str(max(1, round(seconds)))})


def reserve_stream() -> Response | None:
    """Hold a place under ``SSE_MAX_STREAMS`` for this request's stream, before anything
    that may block (a broker subscribe): returns the refusal if the process is full, else
    None. The stream made for this request takes the place over; if the request ends
    without one (a 4xx, an exception), the place is given back."""
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


def take_stream_slot(environ: dict[str, Any], registry: StreamRegistry) -> bool:
    """Whether this request held a place in ``registry`` (now taken over by its stream)."""
    if environ.get(SLOT_KEY) is registry:
        del environ[SLOT_KEY]
        return True
    return False


def release_stream_slot(environ: dict[str, Any]) -> None:
    """Give back this request's unused place (no-op once its stream took it over)."""
    registry = environ.pop(SLOT_KEY, None)
    if registry is not None:
        registry.unreserve()
