"""An OpenAI-compatible Chat Completions endpoint in front of any chat backend.

Routes (relative to the blueprint's ``url_prefix``; mounted at ``/v1``,
``OpenAI(base_url="http://HOST/v1")`` works):

* ``POST /chat/completions``: ``messages`` (text content, as a string or text parts),
  ``stream`` and ``stream_options.include_usage``. Streamed: ``chat.completion.chunk``
  events and ``data: [DONE]``; otherwise one ``chat.completion`` object.
* ``GET /models``: the one model.

Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``. The stream
never carries an ``id:`` field: the official Python SDK's decoder remembers the last id
and then turns a blank line that follows a comment into an empty event (which fails to
parse as JSON). Heartbeat comments are never followed by a blank line either, so the
stream stays readable whichever way a client parses it. OpenAI streams are not resumable;
the generation behind one still runs out its grace period when the client drops, and
counts against the caps until then.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ...runtime import END, Mailbox
from ...stream.requests import reserve_stream
from ...wire.event import to_bytes
from ..backends import ChatBackend
from ..entries import Entry, parse_entries
from ..runner import OnFinish
from ..service import ChatAuthorize, GenerationRoutes
from ..store import Follow, FollowStatus
from ..validation import (
    ChatInputError,
    ChatLimits,
    check_message_list,
    check_messages,
    read_json_body,
)
from .framing import Framer

__all__ = ["OpenAIRoutes", "create_openai_blueprint", "openai_messages"]

DONE = b"data: [DONE]\n\n"
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _data(value: dict[str, Any]) -> bytes:
    """``data: <compact JSON>`` and the blank line (JSON escapes every line break, so it
    is one line; a lone surrogate from an upstream becomes U+FFFD, as in every event)."""
    return to_bytes(value)


def _usage(data: dict[str, Any]) -> dict[str, int]:
    usage = data.get("usage") or {}
    return {key: int(usage.get(key) or 0)
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _error_body(message: str, status: int) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _failure(data: dict[str, Any]) -> str | None:
    """The error message of a close entry that is not a normal end (None if it is)."""
    reason = data.get("finish_reason")
    if reason == "error":
        return str(data.get("error") or "the reply failed")
    if reason == "cancelled":
        return "the reply was cancelled"
    return None


class CompletionChunkFramer(Framer):
    """Log entries as ``chat.completion.chunk`` events for one request (its id, creation
    time and ``include_usage`` are in every frame)."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        super().__init__()
        self.base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        self.include_usage = include_usage

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        value = {**self.base, "choices": [choice]}
        if self.include_usage:
            value["usage"] = None
        return _data(value)

    def opening(self, stream_id: str) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def frame_entry(self, entry: Entry) -> bytes:
        if not entry.close:
            return self._chunk({"content": entry.content})
        failure = _failure(entry.data)
        if failure is not None:
            return _data(_error_body(failure, 500)) + DONE
        out = self._chunk({}, str(entry.data.get("finish_reason") or "stop"))
        if self.include_usage:
            out += _data({**self.base, "choices": [], "usage": _usage(entry.data)})
        return out + DONE


def openai_messages(value: Any, limits: ChatLimits) -> list[dict[str, str]]:
    """Chat Completions messages as the backend's ``{role, content}``: ``developer`` is
    a ``system`` message, content parts are joined by their text, and messages without
    text (tool calls, tool results) are left out."""
    check_message_list(value, limits)
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise ChatInputError(400, f"messages[{index}] must be an object with a role")
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(
                str(part.get("text") or "") for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        if item["role"] in ("tool", "function") or content is None:
            continue
        if not isinstance(content, str):
            raise ChatInputError(400, f"messages[{index}].content must be text")
        role = ROLES.get(item["role"])
        if role is None:
            raise ChatInputError(400, f"messages[{index}].role {item['role']!r} is not known")
        messages.append({"role": role, "content": content})
    return check_messages(messages, limits)


class OpenAIRoutes(GenerationRoutes):
    def __init__(self, backend: ChatBackend, *, model: str, **kwargs: Any) -> None:
        self.model = model
        super().__init__(backend, **kwargs)

    def add_routes(self, bp: Blueprint) -> None:
        bp.add_url_rule("/chat/completions", "completions", self.completions, methods=["POST"])
        bp.add_url_rule("/models", "models", self.models, methods=["GET"])

    def error(self, status: int, message: str, *, param: str | None = None) -> Response:
        response = jsonify(_error_body(message, status))
        response.status_code = status
        return response

    def models(self) -> Response:
        self.caller()
        return jsonify(object="list", data=[self._model_card()])

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": 0, "owned_by": "flask-sse-stream"}

    def completions(self) -> Response:
        """One reply, streamed as chunks or answered as one ``chat.completion``."""
        caller = self.caller()
        body = read_json_body(request, self.state().limits)
        messages = openai_messages(body.get("messages"), self.state().limits)
        stream = body.get("stream", False)
        options = body.get("stream_options") or {}
        if not isinstance(stream, bool) or not isinstance(options, dict):
            raise ChatInputError(400, "stream must be a boolean, stream_options an object")
        if "model" in body and not isinstance(body["model"], str):
            raise ChatInputError(400, "model must be a string")
        if stream:
            refusal = reserve_stream()
            if refusal is not None:
                return refusal
        stream_id = self.start(messages, caller)
        completion_id = f"chatcmpl-{stream_id}"
        if not stream:
            return self._complete(completion_id, *self.follow(stream_id, 0, caller))
        framer = CompletionChunkFramer(
            completion_id, self.model, bool(options.get("include_usage"))
        )
        follow, mailbox = self.follow(stream_id, 0, caller, framer)
        return self.respond(follow, mailbox, opening=framer.opening(stream_id))

    def _complete(self, completion_id: str, follow: Follow, mailbox: Mailbox) -> Response:
        """Wait for the whole reply and answer it as one ``chat.completion``."""
        created = int(time.time())
        text: list[str] = []
        close: dict[str, Any] | None = None
        pending = parse_entries(follow.prelude) if follow.status is FollowStatus.LIVE else []
        try:
            while True:
                for entry in pending:
                    if entry.close:
                        close = entry.data
                        break
                    text.append(entry.content)
                if close is not None or follow.status is not FollowStatus.LIVE:
                    break
                chunks = mailbox.take(5.0)
                if chunks is None:
                    continue
                ended = chunks[-1] is END
                pending = parse_entries(b"".join(chunks))
                if ended and not any(entry.close for entry in pending):
                    for entry in pending:
                        text.append(entry.content)
                    break
        finally:
            follow.stop()
        if close is None:
            return self.error(502, "the reply was interrupted")
        failure = _failure(close)
        if failure is not None:
            return self.error(502, failure)
        return jsonify(
            id=completion_id,
            object="chat.completion",
            created=created,
            model=self.model,
            system_fingerprint=None,
            choices=[{
                "index": 0,
                "message": {"role": "assistant", "content": "".join(text), "refusal": None},
                "logprobs": None,
                "finish_reason": str(close.get("finish_reason") or "stop"),
            }],
            usage=_usage(close),
        )


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
    """A blueprint answering OpenAI Chat Completions requests (``/chat/completions``,
    ``/models``) with ``backend``'s replies, under the name ``model``; the same
    generations, ``authorize``, caps and ``on_finish`` as :func:`create_chat_blueprint`.
    An OpenAI stream cannot be resumed, so by default a reply stops as soon as its
    client leaves (``stop_on_disconnect=False`` lets it run out the grace period)."""
    routes = OpenAIRoutes(
        backend, model=model, name=name, authorize=authorize, import_name=import_name,
        stop_on_disconnect=stop_on_disconnect, on_finish=on_finish,
    )
    return routes.blueprint
