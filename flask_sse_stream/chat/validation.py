"""Checking what a client sent to the chat routes, before anything starts.

Every failure is a :class:`ChatInputError` carrying the HTTP status and a message that
says what to fix; nothing is started for a request that fails here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

__all__ = [
    "ChatInputError",
    "ChatLimits",
    "Resume",
    "check_messages",
    "encodable",
    "messages_from_request",
    "parse_resume",
    "read_body",
    "read_json_body",
]

ROLES = frozenset({"system", "user", "assistant"})
_RESUME_ID = re.compile(r"([A-Za-z0-9_-]{8,64}):([0-9]{1,9})")


class ChatInputError(Exception):
    """A request refused before anything started: its status, a message saying what to
    fix, ``retry_after`` seconds when coming back later helps (429, 503), and ``param``,
    the field at fault, for protocols whose errors name it (OpenAI's)."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.param = param


@dataclass(frozen=True)
class ChatLimits:
    max_chars: int = 8000  # of all message contents together
    max_messages: int = 50
    max_body_bytes: int = 256 * 1024


@dataclass(frozen=True)
class Resume:
    stream_id: str
    seq: int


def parse_resume(value: str | None) -> Resume | None:
    """``<stream_id>:<seq>`` from Last-Event-ID; None when absent; 400 when malformed."""
    if value is None:
        return None
    match = _RESUME_ID.fullmatch(value)
    if match is None:
        raise ChatInputError(400, "Last-Event-ID must look like <stream_id>:<seq>")
    return Resume(match[1], int(match[2]))


def encodable(value: str) -> bool:
    """Whether ``value`` is text UTF-8 can hold (JSON ``"\\ud800"`` gives a lone
    surrogate, which no model, header or log line takes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any, what: str, limits: ChatLimits) -> str:
    if not isinstance(value, str):
        raise ChatInputError(400, f"{what} must be a string")
    if not value.strip():
        raise ChatInputError(400, f"{what} must not be empty")
    if not encodable(value):  # a lone surrogate (JSON "\ud800") is not text a model reads
        raise ChatInputError(400, f"{what} must be valid Unicode text (no lone surrogates)")
    if len(value) > limits.max_chars:
        raise ChatInputError(413, f"{what} is longer than {limits.max_chars} characters")
    return value


def check_message_list(value: Any, limits: ChatLimits) -> list[Any]:
    """``value`` as a non-empty list of at most ``max_messages`` items (any protocol's
    messages, before each protocol reads its own shape)."""
    if not isinstance(value, list) or not value:
        raise ChatInputError(400, "messages must be a non-empty list")
    if len(value) > limits.max_messages:
        raise ChatInputError(413, f"at most {limits.max_messages} messages")
    return value


def check_messages(value: Any, limits: ChatLimits) -> list[dict[str, str]]:
    """``value`` as a checked conversation of ``{role, content}`` dicts."""
    check_message_list(value, limits)
    messages: list[dict[str, str]] = []
    total = 0
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"role", "content", "name"}:
            raise ChatInputError(400, f"messages[{index}] must be {{role, content}}")
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ChatInputError(400, f"messages[{index}].role must be one of {sorted(ROLES)}")
        content = _text(item.get("content"), f"messages[{index}].content", limits)
        total += len(content)
        messages.append({"role": role, "content": content})
    if total > limits.max_chars:
        raise ChatInputError(413, f"messages are longer than {limits.max_chars} characters")
    if not any(m["role"] == "user" for m in messages):
        raise ChatInputError(400, "messages need at least one user message")
    return messages


def messages_from_request(request: Request, limits: ChatLimits) -> list[dict[str, str]]:
    """The conversation to send to the backend, from ``?message=`` (GET) or the JSON body
    (POST: ``{"message": ...}`` or ``{"messages": [...]}``)."""
    if request.method == "GET":
        if "message" not in request.args:
            raise ChatInputError(400, "the message query parameter is required")
        return [{"role": "user", "content": _text(request.args["message"], "message", limits)}]
    body = read_json_body(request, limits)
    if ("message" in body) == ("messages" in body):
        raise ChatInputError(400, 'send either "message" or "messages"')
    if "message" in body:
        return [{"role": "user", "content": _text(body["message"], "message", limits)}]
    return check_messages(body["messages"], limits)


def read_body(request: Request, limits: ChatLimits) -> bytes:
    """The request body, read at most once through Flask's cache (so an app's
    ``before_request`` that called ``request.get_json()`` and this both can), with a bound
    on its size that holds for chunked uploads too."""
    too_large = ChatInputError(413, f"body larger than {limits.max_body_bytes} bytes")
    length = request.content_length
    if length is not None and length > limits.max_body_bytes:
        raise too_large
    # One byte past the bound (werkzeug stops a chunked upload there), so that a body
    # over it is seen; the app's own MAX_CONTENT_LENGTH still applies if it is lower.
    app_limit = request.max_content_length
    if app_limit is None or app_limit > limits.max_body_bytes:
        request.max_content_length = limits.max_body_bytes + 1  # Flask >= 3.1: per request
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large from None
    if len(raw) > limits.max_body_bytes:
        raise too_large
    return raw


def read_json_body(request: Request, limits: ChatLimits) -> dict[str, Any]:
    """The request's JSON object body, read with a bound on its size."""
    if request.mimetype != "application/json":
        raise ChatInputError(415, "send the body as application/json")
    raw = read_body(request, limits)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError: also an integer of more than 4,300 digits (Python's own limit)
        raise ChatInputError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ChatInputError(400, "the body must be a JSON object")
    return body
