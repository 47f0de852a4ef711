"""The Vercel AI SDK "UI message stream" protocol (v1): ``useChat``, ``DefaultChatTransport``,
assistant-ui.

Routes (relative to the blueprint's ``url_prefix``; the AI SDK's default is ``/api/chat``):

* ``POST /`` with the body ``DefaultChatTransport`` sends (``id`` the chat id, ``messages``
  as UI messages with ``parts``, ``trigger``, ``messageId``): the reply as JSON chunks
  ``start``, ``text-start``, ``text-delta``..., ``text-end``, ``finish`` (or ``error`` +
  ``finish``, or ``abort``) and ``data: [DONE]``, with ``x-vercel-ai-ui-message-stream: v1``.
* ``GET /<chat_id>/stream`` (``reconnectToStream``, ``useChat({resume: true})``): the chat's
  active reply replayed from its start, then live; 204 when none is active.
* ``DELETE /<chat_id>/stream``: stop the active reply (204, or 404).

A chat has at most one active reply: a new POST for the chat stops the one before. The
chat id points at the reply's generation through the store (:meth:`set_alias`), so a
resume works on any process that shares the store.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Response, request

from ...runtime import CloseReason
from ...stream.requests import reserve_stream
from ...wire.event import to_bytes
from ..backends import ChatBackend
from ..entries import Entry
from ..runner import OnFinish
from ..service import Caller, ChatAuthorize, GenerationRoutes
from ..store import FollowStatus
from ..validation import (
    ChatInputError,
    ChatLimits,
    check_message_list,
    check_messages,
    encodable,
    read_json_body,
)
from .framing import Framer

__all__ = ["AISDKRoutes", "UIMessageFramer", "create_ai_sdk_blueprint", "ui_messages"]

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
TEXT_ID = "text-0"
DONE = b"data: [DONE]\n\n"
MAX_CHAT_ID = 200

# OpenAI finish reasons as the AI SDK spells them; anything else is "other".
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "error": "error",
}


def chunk(value: dict[str, Any]) -> bytes:
    """``data: <compact JSON>`` and the blank line (JSON escapes every line break, so it
    is one line; a lone surrogate from an upstream becomes U+FFFD, as in every event)."""
    return to_bytes(value)


class UIMessageFramer(Framer):
    """Log entries as UI message chunks. The first piece (seq 1) opens the text part and
    the close entry ends it, so each entry frames the same for every follower."""

    def __init__(self) -> None:
        super().__init__(shared=True)

    def opening(self, stream_id: str) -> bytes:
        return chunk({"type": "start", "messageId": stream_id})

    def frame_entry(self, entry: Entry) -> bytes:
        if not entry.close:
            delta = chunk({"type": "text-delta", "id": TEXT_ID, "delta": entry.content})
            if entry.seq == 1:
                return chunk({"type": "text-start", "id": TEXT_ID}) + delta
            return delta
        out = [chunk({"type": "text-end", "id": TEXT_ID})] if entry.seq > 1 else []
        reason = str(entry.data.get("finish_reason") or "stop")
        if reason == "cancelled":
            out.append(chunk({"type": "abort", "reason": "cancelled"}))
        else:
            if reason == "error":
                error = entry.data.get("error") or "the reply failed"
                out.append(chunk({"type": "error", "errorText": str(error)}))
            finish: dict[str, Any] = {
                "type": "finish", "finishReason": FINISH_REASONS.get(reason, "other"),
            }
            if entry.data.get("usage") is not None:
                finish["messageMetadata"] = {"usage": entry.data["usage"]}
            out.append(chunk(finish))
        out.append(DONE)
        return b"".join(out)


def ui_messages(value: Any, limits: ChatLimits) -> list[dict[str, str]]:
    """UI messages (``{id, role, parts: [{type: "text", text}...]}``) as the backend's
    ``{role, content}`` messages: the text parts joined; other parts (files, tools,
    reasoning) are left out, and so is a message without text."""
    check_message_list(value, limits)
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("parts"), list):
            raise ChatInputError(400, f"messages[{index}] must be a UI message with parts")
        texts = []
        for part in item["parts"]:
            if isinstance(part, dict) and part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise ChatInputError(400, f"messages[{index}]: a text part needs text")
                texts.append(part["text"])
        content = "".join(texts)
        if content.strip():
            messages.append({"role": item.get("role"), "content": content})
    if not messages:
        raise ChatInputError(400, "messages hold no text")
    return check_messages(messages, limits)


class AISDKRoutes(GenerationRoutes):
    framer = UIMessageFramer()

    def add_routes(self, bp: Blueprint) -> None:
        # "/" without a redirect for the bare prefix: the SDK posts to "/api/chat".
        bp.add_url_rule("/", "send", self.send, methods=["POST"], strict_slashes=False)
        bp.add_url_rule("/<chat_id>/stream", "resume", self.resume, methods=["GET"])
        bp.add_url_rule("/<chat_id>/stream", "stop", self.stop, methods=["DELETE"])

    def send(self) -> Response:
        """Start the reply to a chat's messages and stream it."""
        caller = self.caller()
        body = read_json_body(request, self.state().limits)
        chat_id = _chat_id(body.get("id"))
        messages = ui_messages(body.get("messages"), self.state().limits)
        refusal = reserve_stream()
        if refusal is not None:
            return refusal
        alias = _alias(chat_id, caller)
        store = self.generations.store
        previous = store.alias(alias)
        if previous is not None:
            self.generations.cancel(previous, wait=False)  # one active reply per chat
        stream_id = ""

        def ended() -> None:
            store.clear_alias(alias, stream_id)

        stream_id = self.start(messages, caller, chat_id=chat_id, on_end=ended)
        store.set_alias(alias, stream_id)
        return self._stream(stream_id, caller) or Response(status=204)

    def resume(self, chat_id: str) -> Response:
        """The chat's active reply from its start, then live; 204 when none is active."""
        caller = self.caller()
        stream_id = self.generations.store.alias(_alias(_chat_id(chat_id), caller))
        if stream_id is None:
            return Response(status=204)
        refusal = reserve_stream()
        if refusal is not None:
            return refusal
        return self._stream(stream_id, caller) or Response(status=204)

    def stop(self, chat_id: str) -> Response:
        """Stop the chat's active reply: 204, or 404 when none is active."""
        caller = self.caller()
        stream_id = self.generations.store.alias(_alias(_chat_id(chat_id), caller))
        if stream_id is None or not self.generations.cancel(stream_id, owner=caller.user):
            raise ChatInputError(404, "no active reply for this chat")
        return Response(status=204)

    def _stream(self, stream_id: str, caller: Caller) -> Response | None:
        """The reply replayed from its start then live; None when it is over (a finished
        reply is not offered again)."""
        framer = self.framer
        follow, mailbox = self.follow(stream_id, 0, caller, framer)
        if follow.status is not FollowStatus.LIVE:
            return None
        if mailbox.reason is CloseReason.FINISHED and request.method == "GET":
            return None  # the log was complete already: it finished
        return self.respond(follow, mailbox, opening=framer.opening(stream_id), headers=HEADERS)


def _chat_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_CHAT_ID:
        raise ChatInputError(400, f"id must be a chat id of 1 to {MAX_CHAT_ID} characters")
    if not encodable(value):
        raise ChatInputError(400, "id must be valid Unicode text (no lone surrogates)")
    return value


def _alias(chat_id: str, caller: Caller) -> str:
    """The store's name for a chat: per user, so another user's chat id finds nothing."""
    owner = caller.user or ""
    digest = hashlib.sha256(f"{owner}\0{chat_id}".encode()).hexdigest()[:32]
    return f"ai-chat:{digest}"


def create_ai_sdk_blueprint(
    backend: ChatBackend,
    *,
    name: str = "ai_chat",
    authorize: ChatAuthorize | None = None,
    stop_on_disconnect: bool = False,
    on_finish: OnFinish | None = None,
    import_name: str = __name__,
) -> Blueprint:
    """A blueprint speaking the AI SDK's UI message stream protocol (v1) for
    ``backend``, over the same resumable generations as :func:`create_chat_blueprint`
    (``authorize``, the caps, ``stop_on_disconnect`` and ``on_finish`` apply the same
    way; ``on_finish`` gets the chat id too)."""
    return AISDKRoutes(
        backend, name=name, authorize=authorize, import_name=import_name,
        stop_on_disconnect=stop_on_disconnect, on_finish=on_finish,
    ).blueprint
