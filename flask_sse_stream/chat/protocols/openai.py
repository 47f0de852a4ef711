"""OpenAI-compatible endpoints in front of any chat backend: Chat Completions and the
Responses API, over the same generations as the other protocols.

Routes (relative to the blueprint's ``url_prefix``; mounted at ``/v1``,
``OpenAI(base_url="http://HOST/v1")`` works):

* ``POST /chat/completions`` (``openai_chat.py``): ``messages`` with the assistant's
  ``tool_calls`` and ``tool`` messages, ``tools``, ``tool_choice``, ``stream``,
  ``stream_options.include_usage``. Streamed: ``chat.completion.chunk`` events (text,
  ``reasoning_content``, client-side ``tool_calls``) and ``data: [DONE]``; otherwise one
  ``chat.completion`` object.
* ``POST /responses`` (``openai_responses.py``, ``openai_responses_input.py``): ``input``,
  ``instructions``, function ``tools``, ``tool_choice``, ``stream``. Streamed: the
  Responses event stream (``response.created`` ... ``response.completed``); otherwise one
  ``response`` object.
* ``GET /models``: the one model.

The request's ``tools`` and ``tool_choice`` reach a backend whose ``stream`` accepts them
(the runner's ``options``). Errors are OpenAI's ``{"error": {"message", "type", "param",
"code"}}``, so the SDKs raise ``BadRequestError`` (with ``param``, the field at fault),
``AuthenticationError``, ``RateLimitError`` (the caps, with ``Retry-After``).

A reply that fails is, streamed, an error event (Chat Completions) or
``response.failed`` (Responses); not streamed, a **502** with the failure's message on
both endpoints: the SDKs raise ``InternalServerError`` instead of handing back a partial
reply as if it were whole (a Responses object with ``status: "failed"`` would be returned
as a success, and ``response.output_text`` read silently), and they retry it themselves
(a failed backend call is usually transient: an upstream hiccup, a restart).

The streams never carry an ``id:`` field: the official Python SDK's decoder remembers the
last id and then turns a blank line that follows a comment into an empty event (which
fails to parse as JSON). Heartbeat comments are never followed by a blank line either, so
the stream stays readable whichever way a client parses it. OpenAI streams cannot be
resumed, so by default (``stop_on_disconnect``) a reply stops as soon as its client
leaves, streamed or not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from flask import Blueprint, Response, jsonify, request

from ... import runtime
from ...runtime import END, CloseReason, Mailbox, Sink
from ...runtime.sockets import client_socket
from ...stream.requests import reserve_stream
from ..backends import ChatBackend
from ..entries import Entry, parse_entries
from ..runner import OnFinish
from ..service import Caller, ChatAuthorize, GenerationRoutes
from ..store import Follow, FollowStatus
from ..validation import read_json_body
from .openai_chat import ChatChunkFramer, ChatCompletionBuilder, ChatRequest, chat_request
from .openai_responses import ResponseBuilder, ResponseEventFramer
from .openai_responses_input import ResponsesRequest, responses_request

__all__ = ["OpenAIRoutes", "create_openai_blueprint", "error_body"]

ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
ERROR_CODES = {429: "rate_limit_exceeded", 502: "server_error", 503: "server_error"}
WHOLE_QUEUE = 1 << 20  # chunks: see OpenAIRoutes._whole
WAIT = 1.0  # seconds between checks that a non-streamed request's client is still there


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for ``status``: ``type`` as OpenAI names its errors
    (``invalid_request_error`` for a 4xx it has no other name for, ``server_error`` for a
    5xx), ``param`` the request field at fault."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param,
                      "code": ERROR_CODES.get(status)}}


class EntryFramer(Protocol):
    """A per-request framer of ``openai_chat`` / ``openai_responses``."""

    def opening(self) -> bytes: ...

    def frame(self, entry: Entry) -> bytes: ...


class Builder(Protocol):
    """A non-streamed answer gathered from the entries (``ChatCompletionBuilder``,
    ``ResponseBuilder``)."""

    @property
    def done(self) -> bool: ...

    @property
    def failure(self) -> str | None: ...

    def add(self, entry: Entry) -> None: ...


class OrderedFramingSink:
    """What the log hands to one OpenAI follower, framed by its request's stateful
    framer, into the response's mailbox.

    The framer sees every entry exactly once and in seq order, even where the log's
    hand-over of a live entry (the generation's thread) overtakes the framing of the
    prelude (the request's thread): an entry that comes early waits for the ones before
    it. Entries that frame to nothing (a held tool call, a data part) are not passed on:
    an empty chunk in a mailbox is its ``END``.
    """

    __slots__ = ("_early", "_framer", "_lock", "_next", "inner")

    def __init__(self, inner: Sink, framer: EntryFramer) -> None:
        self.inner = inner
        self._framer = framer
        self._next = 1
        self._early: dict[int, Entry] = {}
        self._lock = threading.Lock()

    @property
    def reason(self) -> CloseReason | None:
        return self.inner.reason

    def frame(self, chunk: bytes) -> bytes:
        """The frames of the entries in ``chunk`` (a prelude or a hand-over) and of any
        that waited for them."""
        out: list[bytes] = []
        with self._lock:
            for entry in parse_entries(chunk):
                if entry.seq >= self._next:  # an entry seen before is skipped
                    self._early[entry.seq] = entry
            while self._next in self._early:
                out.append(self._framer.frame(self._early.pop(self._next)))
                self._next += 1
        return b"".join(out)

    def offer(self, chunk: bytes) -> bool:
        framed = self.frame(chunk)
        return self.inner.offer(framed) if framed else True

    def close(self, reason: CloseReason) -> None:
        self.inner.close(reason)


class ClientWatch:
    """Closes ``mailbox`` (``DISCONNECTED``) when the client of this request leaves while
    it waits for a whole reply: watched by the event loop under gevent, polled at each
    :meth:`gone` with threads."""

    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox
        self._sock = client_socket(request.environ)
        self._runtime = runtime.current()
        self._cancel: Callable[[], None] | None = None
        if self._sock is not None:
            self._cancel = self._runtime.watch_eof(
                self._sock, lambda: mailbox.close(CloseReason.DISCONNECTED), lambda: None)

    def gone(self) -> bool:
        if self._mailbox.reason is CloseReason.DISCONNECTED:
            return True
        if self._cancel is None and self._sock is not None:
            return self._runtime.peer_closed(self._sock) is True
        return False

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self._cancel = None


class OpenAIRoutes(GenerationRoutes):
    def __init__(self, backend: ChatBackend, *, model: str, **kwargs: Any) -> None:
        self.model = model
        super().__init__(backend, **kwargs)

    def add_routes(self, bp: Blueprint) -> None:
        bp.add_url_rule("/chat/completions", "completions", self.completions, methods=["POST"])
        bp.add_url_rule("/responses", "responses", self.responses, methods=["POST"])
        bp.add_url_rule("/models", "models", self.models, methods=["GET"])

    def error(self, status: int, message: str, *, param: str | None = None) -> Response:
        response = jsonify(error_body(message, status, param))
        response.status_code = status
        return response

    def models(self) -> Response:
        self.caller()
        return jsonify(object="list", data=[{"id": self.model, "object": "model",
                                             "created": 0, "owned_by": "flask-sse-stream"}])

    def completions(self) -> Response:
        """One reply, streamed as ``chat.completion.chunk`` events or answered as one
        ``chat.completion``."""
        caller = self.caller()
        parsed = chat_request(read_json_body(request, self.state().limits),
                              self.state().limits)

        def whole(reply_id: str) -> tuple[Builder, Callable[[], dict[str, Any]]]:
            builder = ChatCompletionBuilder(reply_id, self.model)
            return builder, builder.completion

        return self._answer(caller, parsed, "chatcmpl-", lambda reply_id: ChatChunkFramer(
            reply_id, self.model, include_usage=parsed.include_usage), whole)

    def responses(self) -> Response:
        """One reply as a Responses API ``response``: streamed as its event stream, or
        answered as one object."""
        caller = self.caller()
        parsed = responses_request(read_json_body(request, self.state().limits),
                                   self.state().limits)

        def whole(reply_id: str) -> tuple[Builder, Callable[[], dict[str, Any]]]:
            builder = ResponseBuilder(reply_id, self.model, echo=parsed.echo)
            return builder, builder.response

        return self._answer(caller, parsed, "resp_", lambda reply_id: ResponseEventFramer(
            reply_id, self.model, echo=parsed.echo), whole)

    def _answer(
        self, caller: Caller, parsed: ChatRequest | ResponsesRequest, id_prefix: str,
        framer: Callable[[str], EntryFramer],
        builder: Callable[[str], tuple[Builder, Callable[[], dict[str, Any]]]],
    ) -> Response:
        """Start the reply (its tools passed on) and stream it through ``framer``, or
        wait for it whole and answer what ``builder`` built."""
        refusal = self._reserve() if parsed.stream else None
        if refusal is not None:
            return refusal
        stream_id = self.start(parsed.messages, caller, options={
            "tools": parsed.tools, "tool_choice": parsed.tool_choice})
        reply_id = id_prefix + stream_id
        if parsed.stream:
            stream_framer = framer(reply_id)
            return self._stream(stream_id, caller, stream_framer, stream_framer.opening())
        whole, answer = builder(reply_id)
        return self._whole(stream_id, caller, whole, answer)

    def _reserve(self) -> Response | None:
        """A place under ``SSE_MAX_STREAMS`` for a stream, or the refusal (a 503 in
        OpenAI's shape with the ``Retry-After`` the stream layer chose)."""
        refusal = reserve_stream()
        if refusal is None:
            return None
        response = self.error(503, "too many open streams on this server, retry later")
        response.headers["Retry-After"] = refusal.headers.get("Retry-After", "2")
        return response

    def _stream(self, stream_id: str, caller: Caller, framer: EntryFramer,
                opening: bytes) -> Response:
        """The reply as ``framer`` frames it. ``opening`` was made before any entry is
        framed (a Responses stream numbers its events from the opening on)."""
        mailbox = runtime.current().new_mailbox(self.state().queue_size)
        sink = OrderedFramingSink(mailbox, framer)
        follow = self.generations.follow(stream_id, 0, sink, caller.user)
        follow.prelude = sink.frame(follow.prelude) if follow.prelude else b""
        if follow.status is not FollowStatus.LIVE:  # pragma: no cover - it just started
            return self.error(502, "the reply was lost")
        return self.respond(follow, mailbox, opening=opening)

    def _whole(self, stream_id: str, caller: Caller, builder: Builder,
               answer: Callable[[], dict[str, Any]]) -> Response:
        """Wait for the whole reply, then ``answer()`` it as one JSON object; a failed
        reply is a 502 with its message (see the module docstring)."""
        # No bound that matters: the builder holds the whole reply anyway, and a bound
        # would cut this follower off (OVERFLOW) in a burst it has no way to resume.
        mailbox = runtime.current().new_mailbox(WHOLE_QUEUE)
        follow = self.generations.follow(stream_id, 0, mailbox, caller.user)
        if not _gather(follow, mailbox, builder) or not builder.done:
            return self.error(502, "the reply was interrupted")
        if builder.failure is not None:
            return self.error(502, builder.failure)
        return jsonify(answer())


def _gather(follow: Follow, mailbox: Mailbox, builder: Builder) -> bool:
    """Feed ``builder`` the reply's entries until its close entry; False if the client
    left first (its reply is then stopped, with ``stop_on_disconnect``)."""
    if follow.status is not FollowStatus.LIVE:
        return False
    watch = ClientWatch(mailbox)
    try:
        for entry in parse_entries(follow.prelude):
            builder.add(entry)
        while not builder.done:
            chunks = mailbox.take(WAIT)
            if watch.gone():
                return False
            if chunks is None:
                continue
            for entry in parse_entries(b"".join(chunks)):
                builder.add(entry)
            if END in chunks:
                break
    finally:
        watch.stop()
        follow.stop()
    return True


def create_openai_blueprint(
    backend: ChatBackend,
    *,
    name: str = "openai",
    authorize: ChatAuthorize | None = None,
    model: str = "flask-sse-stream",
    stop_on_disconnect: bool = True,
    on_finish: OnFinish | None = None,
    import_name: str = __name__,
) -> Blueprint:
    """A blueprint answering OpenAI Chat Completions (``/chat/completions``) and
    Responses (``/responses``) requests and listing ``/models``, with ``backend``'s
    replies under the name ``model``; the same generations, ``authorize``, caps and
    ``on_finish`` as :func:`create_chat_blueprint`. An OpenAI reply cannot be resumed, so
    by default it stops as soon as its client leaves (``stop_on_disconnect=False`` lets
    it run out the grace period)."""
    routes = OpenAIRoutes(
        backend, model=model, name=name, authorize=authorize, import_name=import_name,
        stop_on_disconnect=stop_on_disconnect, on_finish=on_finish,
    )
    return routes.blueprint
