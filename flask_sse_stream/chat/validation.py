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

__all__ = [
    "ChatInputError",
    "ChatLimits",
    "Resume",
    "check_messages",
    "messages_from_request",
    "parse_resume",
    "read_json_body",
]

ROLES = frozenset({"system", "user", "assistant"})
_RESUME_ID = re.compile(r"([A-Za-z0-9_-]{8,64}):([0-9]{1,9})")


class ChatInputError(Exception):
    """A request refused before anything started: its status, a message saying what to
    fix, and ``retry_after`` seconds when coming back later helps (429, 503)."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


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


def _encodable(value: str) -> bool:
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
    if not _encodable(value):  # a lone surrogate (JSON "\ud800") is not text a model reads
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


def read_json_body(request: Request, limits: ChatLimits) -> dict[str, Any]:
    """The request's JSON object body, read with a bound on its size."""
    if request.mimetype != "application/json":
        raise ChatInputError(415, "send the body as application/json")
    length = request.content_length
    if length is not None and length > limits.max_body_bytes:
        raise ChatInputError(413, f"body larger than {limits.max_body_bytes} bytes")
    # bounded read: a chunked upload has no Content-Length to check first
    raw = request.stream.read(limits.max_body_bytes + 1)
    if len(raw) > limits.max_body_bytes:
        raise ChatInputError(413, f"body larger than {limits.max_body_bytes} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ChatInputError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ChatInputError(400, "the body must be a JSON object")
    return body
