"""The chat blueprint: stream a model's reply over SSE, resumable and cancellable.

Routes (relative to the blueprint's ``url_prefix``):

* ``GET /stream?message=TEXT`` for ``EventSource``;
* ``POST /stream`` with ``{"message": ...}`` or ``{"messages": [...]}`` for fetch clients;
* ``DELETE /stream/<stream_id>`` to stop a generation.

A request with ``Last-Event-ID: <stream_id>:<seq>`` resumes that generation instead of
starting one. Config (read when the blueprint is registered): ``CHAT_MAX_CHARS``,
``CHAT_MAX_MESSAGES``, ``CHAT_MAX_BODY_BYTES``, ``CHAT_GRACE_SECONDS``,
``CHAT_RETENTION_SECONDS``, ``CHAT_QUEUE`` (defaults and checks in ``settings.py``); the
store follows ``SSE_BROKER_URL``, chosen by the same rule as the channels' broker.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Request, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from ..brokers.base import BrokerError
from ..concurrency import current as current_concurrency
from ..event import Event
from ..mailbox import CloseReason, Mailbox, new_mailbox
from ..registry import StreamRegistry
from ..response import StreamSettings, last_event_id, refuse_stream, registry_for, stream_response
from ..response import too_many_streams as _too_many_streams
from ..settings import CHAT_DEFAULTS, Settings, settings_for
from .backends import ChatBackend
from .generation import FollowStatus, Generations, GenerationStore, MemoryGenerationStore
from .validation import ChatInputError, ChatLimits, messages_from_request, parse_resume

__all__ = ["CHAT_DEFAULTS", "create_chat_blueprint"]

Authorize = Callable[[Request], "bool | str | None"]


@dataclass
class ChatState:
    generations: Generations
    limits: ChatLimits
    queue_size: int


def _error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def _make_store(settings: Settings) -> GenerationStore:
    retention = settings.chat_retention_seconds
    if settings.broker_kind == "redis":
        from .redis_store import RedisGenerationStore

        return RedisGenerationStore(settings.broker_url, retention=retention)
    return MemoryGenerationStore(retention=retention)


def create_chat_blueprint(
    backend: ChatBackend,
    *,
    name: str = "chat",
    authorize: Authorize | None = None,
    import_name: str = __name__,
) -> Blueprint:
    """A blueprint streaming ``backend``'s replies. ``authorize(request)`` is checked on
    every route (start, resume and cancel): false answers 401. Returning a user id (a
    ``str``) instead of True also binds each generation to that user: another user's
    stream id or Last-Event-ID then grants nothing (resume gets the "no longer available"
    close, DELETE a 404)."""
    bp = Blueprint(name, import_name)
    state_key = f"flask_sse_stream.chat.{name}"

    @bp.record
    def setup(setup_state: BlueprintSetupState) -> None:
        app = setup_state.app
        if state_key in app.extensions:
            return  # registered twice on one app (two prefixes): share the state
        settings = settings_for(app, reload=True)  # checks every key (ValueError names it)
        store = _make_store(settings)
        generations = Generations(store, backend, settings.chat_grace_seconds)
        app.extensions[state_key] = ChatState(
            generations=generations,
            limits=ChatLimits(
                max_chars=settings.chat_max_chars,
                max_messages=settings.chat_max_messages,
                max_body_bytes=settings.chat_max_body_bytes,
            ),
            queue_size=settings.chat_queue,
        )
        registry: StreamRegistry = registry_for(app)
        registry.on_shutdown(generations.stop_all)

    def identify() -> tuple[bool, str | None]:
        """(allowed, user): ``authorize`` may return a user id instead of True, which
        binds each generation to that user for resume and cancel."""
        if authorize is None:
            return True, None
        verdict = authorize(request)
        if not verdict:
            return False, None
        return True, verdict if isinstance(verdict, str) else None

    def state() -> ChatState:
        return current_app.extensions[state_key]  # type: ignore[no-any-return]

    @bp.errorhandler(ChatInputError)
    def input_error(exc: ChatInputError) -> Response:
        return _error(exc.status, exc.message)

    @bp.errorhandler(BrokerError)
    def broker_error(exc: BrokerError) -> Response:
        current_app.logger.warning("chat: %s", exc)
        # EventSource gets a 200 with a retry: hint (any other status ends it for good)
        return refuse_stream("the event broker is unavailable, retry later")

    @bp.route("/stream", methods=["GET", "POST"])
    def stream() -> Response:
        allowed, user = identify()
        if not allowed:
            return _error(401, "not authorized")
        chat = state()
        resume = parse_resume(last_event_id())
        if resume is None:
            messages = messages_from_request(request, chat.limits)
        elif request.method == "POST":
            request.stream.read(chat.limits.max_body_bytes)  # the re-sent body: not needed
        refusal = _too_many_streams()
        if refusal is not None:
            return refusal
        mailbox = new_mailbox(current_concurrency(), chat.queue_size)
        if resume is None:
            stream_id = secrets.token_urlsafe(16)
            # Following from seq 0 gets whatever the generation wrote before this line as
            # the prelude, so no piece can be missed whichever runs first.
            chat.generations.start(stream_id, messages, user)
            follow = chat.generations.follow(stream_id, 0, mailbox, user)
        else:
            stream_id = resume.stream_id
            follow = chat.generations.follow(stream_id, resume.seq, mailbox, user)
            if follow.status is FollowStatus.FINISHED:
                return Response(status=204)
            if follow.status is FollowStatus.UNKNOWN:
                return _expired(stream_id, resume.seq, mailbox)
        response = stream_response(
            mailbox, StreamSettings.default(), prelude=follow.prelude, on_close=(follow.stop,)
        )
        response.headers["X-Stream-ID"] = stream_id
        return response

    @bp.delete("/stream/<stream_id>")
    def cancel(stream_id: str) -> Response:
        allowed, user = identify()
        if not allowed:
            return _error(401, "not authorized")
        if len(stream_id) > 64 or not state().generations.cancel(stream_id, owner=user):
            return _error(404, "no such stream")
        return Response(status=204)

    return bp


def _expired(stream_id: str, seq: int, mailbox: Mailbox) -> Response:
    """An unknown or expired generation is never restarted: the client gets a stream
    holding only a ``close`` event that says so."""
    close = Event(
        {"finish_reason": "error", "error": "this reply is no longer available"},
        event="close",
        id=f"{stream_id}:{seq + 1}",
    )
    mailbox.close(CloseReason.FINISHED)
    return stream_response(mailbox, StreamSettings.default(), prelude=close.encode())
