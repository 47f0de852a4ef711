"""The Chat Completions wire format over the generation log, and its request's input.

* :class:`ChatChunkFramer`: the entries of one request as ``chat.completion.chunk``
  events: text as ``delta.content``, reasoning as ``delta.reasoning_content``,
  client-side tool calls as ``delta.tool_calls`` (one chunk per call, ``index`` counting
  the calls of this reply from 0) and ``finish_reason: "tool_calls"``. Server-side
  tool calls and their results, data and sources are not shown (:class:`ClientToolCalls`).
  A failed or cancelled reply is an ``{"error": ...}`` event (the SDKs raise it), then
  ``data: [DONE]``.
* :class:`ChatCompletionBuilder`: the same entries as one ``chat.completion`` object.
* :func:`chat_request`: a request body as the backend's messages, tools and tool choice.

Pure: no Flask, no I/O. Frames never carry an SSE ``id:`` (see ``openai.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ...wire.event import compact_json, to_bytes
from ..entries import CLOSE, REASONING, TEXT, TOOL_CALL, Entry
from ..validation import ChatLimits
from .openai_shared import (
    ClientToolCalls,
    bad,
    check_conversation,
    check_text,
    check_tool_choice,
    check_tools,
    failure,
    usage_counts,
)

__all__ = [
    "DONE",
    "ChatChunkFramer",
    "ChatCompletionBuilder",
    "ChatRequest",
    "chat_messages",
    "chat_request",
    "finish_reason",
]

DONE = b"data: [DONE]\n\n"
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})
ROLES = {"system": "system", "developer": "system", "user": "user",
         "assistant": "assistant", "tool": "tool"}


def finish_reason(data: dict[str, Any], calls: int) -> str:
    """The ``finish_reason`` for a reply that ended normally with ``calls`` client-side
    tool calls shown: ``"tool_calls"`` exactly when there are calls to run (unless the
    model was cut off), and one of the values the SDKs' types allow (a backend's own
    reason outside them becomes ``"stop"``)."""
    reason = str(data.get("finish_reason") or "stop")
    if reason not in FINISH_REASONS or (reason == "tool_calls" and not calls):
        reason = "stop"
    if calls and reason == "stop":
        reason = "tool_calls"
    return reason


def error_event(message: str) -> bytes:
    """A stream's failure as OpenAI sends it mid-stream: ``data: {"error": {...}}``."""
    return to_bytes({"error": {"message": message, "type": "server_error",
                               "param": None, "code": None}})


def tool_call(entry: Entry) -> dict[str, Any]:
    """A ``tool-call`` entry as a Chat Completions function call (arguments as JSON
    text)."""
    data = entry.data
    return {"id": str(data.get("id")), "type": "function",
            "function": {"name": str(data.get("name")),
                         "arguments": compact_json(data.get("arguments") or {})}}


class ChatChunkFramer:
    """The entries of one reply as the ``chat.completion.chunk`` events of one request
    (its id, creation time and ``include_usage`` are in every frame). Stateful: one per
    request, fed each entry once, in log order."""

    def __init__(self, completion_id: str, model: str, *, include_usage: bool = False,
                 created: int | None = None) -> None:
        self.base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()) if created is None else created,
            "model": model,
            "system_fingerprint": None,
        }
        self.include_usage = include_usage
        self._visible = ClientToolCalls()
        self._calls = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        value = {**self.base, "choices": [choice]}
        if self.include_usage:
            value["usage"] = None
        return to_bytes(value)

    def opening(self) -> bytes:
        """The first chunk (the assistant's role), sent before any entry."""
        return self._chunk({"role": "assistant", "content": ""})

    def frame(self, entry: Entry) -> bytes:
        """The bytes this request's client gets for ``entry`` (often none: a held or
        hidden entry)."""
        return b"".join(self._frame_shown(shown) for shown in self._visible.feed(entry))

    def _frame_shown(self, entry: Entry) -> bytes:
        if entry.kind == TEXT:
            return self._chunk({"content": entry.content}) if entry.content else b""
        if entry.kind == REASONING:
            return self._chunk({"reasoning_content": entry.content}) if entry.content else b""
        if entry.kind == TOOL_CALL:
            call = {"index": self._calls, **tool_call(entry)}
            self._calls += 1
            return self._chunk({"tool_calls": [call]})
        if entry.kind == CLOSE:
            return self._close(entry.data)
        return b""  # the result of a server-side call

    def _close(self, data: dict[str, Any]) -> bytes:
        message = failure(data)
        if message is not None:
            return error_event(message) + DONE
        out = self._chunk({}, finish_reason(data, self._calls))
        if self.include_usage:
            out += to_bytes({**self.base, "choices": [], "usage": usage_counts(data)})
        return out + DONE


class ChatCompletionBuilder:
    """The entries of one reply gathered into one ``chat.completion`` object (the
    answer to a request without ``stream``). Feed entries with :meth:`add` until
    :attr:`done`; then :attr:`failure` says whether the reply failed or was cancelled,
    and :meth:`completion` is the object."""

    def __init__(self, completion_id: str, model: str, *, created: int | None = None) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time()) if created is None else created
        self._visible = ClientToolCalls()
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[dict[str, Any]] = []
        self._close: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        """True once the close entry came."""
        return self._close is not None

    @property
    def failure(self) -> str | None:
        """Why the reply did not end normally (None while it runs, or if it did)."""
        return None if self._close is None else failure(self._close)

    def add(self, entry: Entry) -> None:
        for shown in self._visible.feed(entry):
            if shown.kind == TEXT:
                self._text.append(shown.content)
            elif shown.kind == REASONING:
                self._reasoning.append(shown.content)
            elif shown.kind == TOOL_CALL:
                self._calls.append(tool_call(shown))
            elif shown.kind == CLOSE:
                self._close = shown.data

    def completion(self) -> dict[str, Any]:
        """The ``chat.completion`` object of a reply that ended normally."""
        close = self._close or {}
        text = "".join(self._text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if self._calls and not text else text,
            "refusal": None,
            # always there (null without reasoning): SDK users read it as an attribute
            "reasoning_content": "".join(self._reasoning) or None,
        }
        if self._calls:
            message["tool_calls"] = self._calls
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason(close, len(self._calls))}],
            "usage": usage_counts(close),
        }


@dataclass(frozen=True)
class ChatRequest:
    """A checked Chat Completions request: what the backend gets, and how to answer."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None
    stream: bool
    include_usage: bool


def chat_request(body: dict[str, Any], limits: ChatLimits) -> ChatRequest:
    """A Chat Completions request body, checked: its ``messages`` as backend messages,
    ``tools`` and ``tool_choice`` for the backend, ``stream`` and
    ``stream_options.include_usage``. Refused with a 4xx ``ChatInputError`` naming the ``param``."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream", "Invalid type for 'stream': expected a boolean.")
    options = body.get("stream_options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise bad("stream_options", "Invalid type for 'stream_options': expected an object.")
    if "model" in body and not isinstance(body["model"], str):
        raise bad("model", "Invalid type for 'model': expected a string.")
    if body.get("n") not in (None, 1):
        raise bad("n", "Only one choice per request is supported ('n' must be 1).")
    tools = check_tools(body.get("tools"), flat=False)
    return ChatRequest(
        messages=chat_messages(body.get("messages"), limits),
        tools=tools,
        tool_choice=check_tool_choice(body.get("tool_choice"), tools, flat=False),
        stream=stream,
        include_usage=bool(options.get("include_usage")),
    )


def chat_messages(value: Any, limits: ChatLimits) -> list[dict[str, Any]]:
    """Chat Completions ``messages`` as backend messages: ``developer`` becomes
    ``system``; content (a string or text parts) becomes a string; an assistant's
    ``tool_calls`` and a ``tool`` message's ``tool_call_id`` are kept, and each tool
    message must answer a call an earlier assistant message made."""
    if not isinstance(value, list) or not value:
        raise bad("messages", "'messages' must be a non-empty array of messages.")
    if len(value) > limits.max_messages:
        raise bad("messages", f"'messages' holds at most {limits.max_messages} messages.", 413)
    messages: list[dict[str, Any]] = []
    calls: set[str] = set()
    for index, item in enumerate(value):
        message = _message(item, f"messages[{index}]")
        if message["role"] == "tool" and message["tool_call_id"] not in calls:
            raise bad(f"messages[{index}].tool_call_id",
                      f"'messages[{index}]' answers the tool call "
                      f"{message['tool_call_id']!r}, which no earlier assistant message made.")
        calls.update(call["id"] for call in message.get("tool_calls", ()))
        messages.append(message)
    return check_conversation(messages, limits, "messages")


def _message(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise bad(param, f"Invalid type for '{param}': expected an object.")
    name = item.get("role")
    role = ROLES.get(name) if isinstance(name, str) else None
    if role is None:
        raise bad(f"{param}.role", f"Invalid value for '{param}.role': {name!r}. "
                                   "Supported values are: 'system', 'developer', 'user', "
                                   "'assistant' and 'tool'.")
    if item.get("function_call") is not None:
        raise bad(f"{param}.function_call", "'function_call' is deprecated and not supported:"
                                            " send 'tool_calls'.")
    if role == "assistant" and item.get("tool_calls"):
        content = _content(item.get("content"), f"{param}.content", empty=True)
        return {"role": role, "content": content,
                "tool_calls": _tool_calls(item["tool_calls"], f"{param}.tool_calls")}
    content = _content(item.get("content"), f"{param}.content", empty=role == "tool")
    if role == "tool":
        call_id = check_text(item.get("tool_call_id"), f"{param}.tool_call_id")
        return {"role": role, "tool_call_id": call_id, "content": content}
    return {"role": role, "content": content}


def _content(value: Any, param: str, *, empty: bool) -> str:
    """A message's content (a string, text parts, or null where ``empty`` allows it) as
    one string."""
    if value is None and empty:
        return ""
    if isinstance(value, list):
        texts = []
        for index, part in enumerate(value):
            where = f"{param}[{index}]"
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else None
                raise bad(f"{where}.type", f"Content part type {kind!r} in '{where}' is not "
                                           "supported: this server takes text only.")
            texts.append(check_text(part.get("text"), f"{where}.text", empty=True))
        value = "".join(texts)
    return check_text(value, param, empty=empty)


def _tool_calls(value: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise bad(param, f"Invalid type for '{param}': expected an array of tool calls.")
    calls = []
    for index, call in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise bad(where, f"'{where}' must be a function tool call.")
        function = call.get("function")
        if not isinstance(function, dict):
            raise bad(f"{where}.function", f"Missing required parameter: '{where}.function'.")
        calls.append({
            "id": check_text(call.get("id"), f"{where}.id"),
            "type": "function",
            "function": {"name": check_text(function.get("name"), f"{where}.function.name"),
                         "arguments": check_text(function.get("arguments"),
                                                 f"{where}.function.arguments", empty=True)},
        })
    return calls
