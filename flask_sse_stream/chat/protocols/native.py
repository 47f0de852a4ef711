"""This project's own chat protocol, for ``EventSource`` and fetch-based SSE clients.

Routes (relative to the blueprint's ``url_prefix``):

* ``GET /stream?message=TEXT`` for ``EventSource``;
* ``POST /stream`` with ``{"message": ...}`` or ``{"messages": [...]}`` for fetch clients;
* ``DELETE /stream/<stream_id>`` to stop a generation.

Each piece is a ``{"content"}`` event with the id ``<stream_id>:<seq>``; the reply ends
with ``event: close``. A request with ``Last-Event-ID: <stream_id>:<seq>`` resumes that
generation instead of starting one. The log stores entries in exactly this encoding, so
this protocol needs no framer.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from ...runtime import CloseReason, Mailbox
from ...stream.options import StreamOptions
from ...stream.requests import last_event_id, reserve_stream
from ...stream.views import stream_response
from ...wire.event import Event
from ..backends import ChatBackend
from ..runner import OnFinish
from ..service import ChatAuthorize, GenerationRoutes
from ..store import FollowStatus
from ..validation import ChatInputError, messages_from_request, parse_resume

__all__ = ["NativeRoutes", "create_chat_blueprint"]


class NativeRoutes(GenerationRoutes):
    def add_routes(self, bp: Blueprint) -> None:
        bp.add_url_rule("/stream", "stream", self.stream, methods=["GET", "POST"])
        # any text after the slash, slashes and empty included, is an id to look up: an
        # unknown one is a 404 JSON, never Flask's HTML page or a redirect
        bp.add_url_rule("/stream/<sse_any:stream_id>", "cancel", self.cancel,
                        methods=["DELETE"], merge_slashes=False)

    def stream(self) -> Response:
        """Start a generation and stream it, or resume one from ``Last-Event-ID``."""
        caller = self.caller()
        limits = self.state().limits
        resume = parse_resume(last_event_id())
        if resume is None:
            messages = messages_from_request(request, limits)
        elif request.method == "POST":
            request.stream.read(limits.max_body_bytes)  # the re-sent body: not needed
        refusal = reserve_stream()
        if refusal is not None:
            return refusal
        if resume is None:
            # Following from seq 0 gets whatever the generation wrote before this line as
            # the prelude, so no piece can be missed whichever runs first.
            stream_id = self.start(messages, caller)
            follow, mailbox = self.follow(stream_id, 0, caller)
        else:
            stream_id = resume.stream_id
            follow, mailbox = self.follow(stream_id, resume.seq, caller)
            if follow.status is FollowStatus.FINISHED:
                return Response(status=204)
            if follow.status is FollowStatus.UNKNOWN:
                return _expired(stream_id, resume.seq, mailbox)
        return self.respond(follow, mailbox, headers={"X-Stream-ID": stream_id})

    def cancel(self, stream_id: str) -> Response:
        """Stop a generation: 204, or 404 for an unknown (or another user's) id."""
        caller = self.caller()
        if len(stream_id) > 64 or not self.generations.cancel(stream_id, owner=caller.user):
            raise ChatInputError(404, "no such stream")
        return Response(status=204)


def _expired(stream_id: str, seq: int, mailbox: Mailbox) -> Response:
    """An unknown or expired generation is never restarted: the client gets a stream
    holding only a ``close`` event that says so."""
    close = Event(
        {"finish_reason": "error", "error": "this reply is no longer available"},
        event="close",
        id=f"{stream_id}:{seq + 1}",
    )
    mailbox.close(CloseReason.FINISHED)
    return stream_response(mailbox, StreamOptions.for_app(current_app), prelude=close.encode())


def create_chat_blueprint(
    backend: ChatBackend,
    *,
    name: str = "chat",
    authorize: ChatAuthorize | None = None,
    stop_on_disconnect: bool = False,
    on_finish: OnFinish | None = None,
    import_name: str = __name__,
) -> Blueprint:
    """A blueprint streaming ``backend``'s replies in this project's protocol.

    ``authorize(request)`` is checked on every route (start, resume and cancel): false
    answers 401. Returning a user id (a ``str``) instead of True also binds each
    generation to that user: another user's stream id or Last-Event-ID then grants
    nothing (resume gets the "no longer available" close, DELETE a 404).
    ``stop_on_disconnect``: stop a reply as soon as its last client leaves, instead of
    letting it run ``CHAT_GRACE_SECONDS`` for a resume (for clients that never resume).
    ``on_finish(reply)``: called once per reply that ends (finished, stopped or
    failed), with a :class:`~flask_sse_stream.chat.FinishedReply`, in the process that
    ran it: the place to save it."""
    return NativeRoutes(
        backend, name=name, authorize=authorize, import_name=import_name,
        stop_on_disconnect=stop_on_disconnect, on_finish=on_finish,
    ).blueprint
