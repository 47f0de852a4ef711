"""The UI messages ``useChat`` sends (``{id, role, parts}``) as the backend's messages.

Backend messages are OpenAI chat messages (``role``, ``content`` a string; an assistant
message may carry ``tool_calls``, a ``tool`` message answers one by ``tool_call_id``). The
conversion follows the AI SDK's own ``convertToModelMessages`` where OpenAI chat can
express it:

* ``system`` and ``user`` messages: their text parts joined (files and data left out); a
  message without text is left out.
* ``assistant`` messages: split at ``step-start`` parts, one step (one model call) at a
  time. A step's text parts joined are the assistant message's ``content``; its finished
  tool parts (``tool-<name>`` and ``dynamic-tool`` in state ``output-available``,
  ``output-error`` or ``output-denied``) are its ``tool_calls`` (``arguments``: the JSON
  text of ``input``) and, after it, one ``tool`` message per call (``content``: the
  output, as is when it is a string, else its JSON text; or the error text).
* reasoning, sources, files, data and step parts are left out.
* a tool part without a result (``input-streaming``, ``input-available``, awaiting
  approval) is left out, as the SDK's ``ignoreIncompleteToolCalls`` does. OpenAI refuses
  an assistant ``tool_calls`` entry that no ``tool`` message answers, and refusing the
  request instead would wedge the chat: a call the user stopped stays in every later
  request's history, so no message could be sent again.

Errors name the UI message by its index in the list the client sent (``messages[3]``).

:func:`request_tools` reads the request's own ``tools`` (assistant-ui sends its frontend
tools that way) as the backend's function tools.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..validation import ChatInputError, ChatLimits, check_message_list
from .openai_shared import MAX_TOOLS, check_tools, function_tool

__all__ = ["UI_ROLES", "request_tools", "response_message_id", "ui_messages"]

UI_ROLES = ("system", "user", "assistant")
_FINISHED = frozenset({"output-available", "output-error", "output-denied"})
_DENIED = "Tool call execution denied."  # what the SDK tells the model for a denied call
MAX_MESSAGE_ID = 200
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names


def ui_messages(value: Any, limits: ChatLimits) -> list[dict[str, Any]]:
    """``value`` (the request's ``messages``) as checked backend messages: at most
    ``limits.max_messages`` UI messages, at most ``limits.max_chars`` characters of
    contents, tool arguments and tool outputs together, at least one user message."""
    check_message_list(value, limits)
    messages: list[dict[str, Any]] = []
    total = 0
    for index, item in enumerate(value):
        converted = _convert(index, item)
        total += sum(_size(message) for message in converted)
        if total > limits.max_chars:
            raise ChatInputError(413, f"messages are longer than {limits.max_chars} "
                                      f"characters (at messages[{index}])")
        messages.extend(converted)
    if not messages:
        raise ChatInputError(400, "messages hold no text")
    if not any(message["role"] == "user" for message in messages):
        raise ChatInputError(400, "messages need at least one user message")
    return messages


def response_message_id(value: Any, stream_id: str) -> str:
    """The id the reply's ``start`` chunk should carry: the last UI message's id when it
    is an assistant message (the reply continues it, e.g. after ``addToolOutput``, as the
    SDK's own server does), else ``stream_id``. A new id for a continuation makes
    ``useChat`` show the continued message twice."""
    last = value[-1] if isinstance(value, list) and value else None
    if isinstance(last, dict) and last.get("role") == "assistant":
        message_id = last.get("id")
        if isinstance(message_id, str) and 0 < len(message_id) <= MAX_MESSAGE_ID:
            return message_id
    return stream_id


def request_tools(value: Any) -> list[dict[str, Any]] | None:
    """The request's ``tools`` as backend (Chat Completions) function tools, or None.

    assistant-ui sends its frontend tools (``makeAssistantTool``, ``useAssistantTool``) as
    an object ``{name: {description?, parameters}}``; they are client-side tools: the
    model may call them, the reply then ends with ``tool-calls`` and the page's result
    comes back in the next POST. A list in the Chat Completions shape is taken too. A
    backend that does not take ``tools`` never sees them; one that does keeps its own
    tool of a name (``OpenAIBackend``), so a client cannot replace a server-side tool.
    Fields other than the name, description and parameters (assistant-ui's
    ``providerOptions``) are left out."""
    if value is None or value == {} or value == []:
        return None
    if isinstance(value, list):
        return check_tools(value, flat=False)
    if not isinstance(value, dict):
        raise ChatInputError(400, "tools must be an object of {name: {description, "
                                  "parameters}} (or a list of function tools)", param="tools")
    if len(value) > MAX_TOOLS:
        raise ChatInputError(400, f"tools holds at most {MAX_TOOLS} tools", param="tools")
    tools = []
    for name, spec in value.items():
        if _TOOL_NAME.fullmatch(name) is None:  # checked first: the errors below name it
            raise ChatInputError(400, "tools: a tool name is 1 to 64 characters of a-z, "
                                      "A-Z, 0-9, _ and -", param="tools")
        if not isinstance(spec, dict):
            raise ChatInputError(400, f"tools.{name} must be an object with parameters",
                                 param=f"tools.{name}")
        tools.append(function_tool(name, spec.get("description"), spec.get("parameters"),
                                   None, f"tools.{name}"))
    return tools


def _convert(index: int, item: Any) -> list[dict[str, Any]]:
    """One UI message as zero or more backend messages."""
    where = f"messages[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("parts"), list):
        raise ChatInputError(400, f"{where} must be a UI message with parts")
    role = item.get("role")
    if role not in UI_ROLES:
        raise ChatInputError(400, f"{where}.role must be one of {sorted(UI_ROLES)}")
    parts = item["parts"]
    for number, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ChatInputError(400, f"{where}.parts[{number}] must be an object with a type")
    if role != "assistant":
        content = _text(where, enumerate(parts))
        return [{"role": role, "content": content}] if content.strip() else []
    out: list[dict[str, Any]] = []
    for step in _steps(parts):
        out.extend(_assistant_step(where, step))
    return out


def _steps(parts: list[dict[str, Any]]) -> list[list[tuple[int, dict[str, Any]]]]:
    """The parts (with their index) of each step: split at every ``step-start``."""
    steps: list[list[tuple[int, dict[str, Any]]]] = [[]]
    for number, part in enumerate(parts):
        if part["type"] == "step-start":
            steps.append([])
        else:
            steps[-1].append((number, part))
    return [step for step in steps if step]


def _text(where: str, parts: Any) -> str:
    """The text parts among ``parts`` (pairs of index and part) joined."""
    texts = []
    for number, part in parts:
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ChatInputError(400, f"{where}.parts[{number}]: a text part needs text")
            texts.append(_unicode(text, f"{where}.parts[{number}].text"))
    return "".join(texts)


def _assistant_step(where: str, step: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One step of an assistant message: its message, then a tool message per call."""
    content = _text(where, step)
    calls, results = [], []
    for number, part in step:
        tool = _tool_call(f"{where}.parts[{number}]", part)
        if tool is not None:
            calls.append(tool[0])
            results.append(tool[1])
    if calls:
        return [{"role": "assistant", "content": content, "tool_calls": calls}, *results]
    return [{"role": "assistant", "content": content}] if content.strip() else []


def _tool_call(where: str, part: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A finished tool part as its ``tool_calls`` entry and its ``tool`` message; None for
    a part that is not a tool part or has no result yet."""
    kind = part["type"]
    if kind == "dynamic-tool":
        name = part.get("toolName")
    elif kind.startswith("tool-"):
        name = kind[len("tool-"):]
    else:
        return None
    if part.get("state") not in _FINISHED:
        return None
    if not isinstance(name, str) or not name:
        raise ChatInputError(400, f"{where} must name its tool")
    call_id = part.get("toolCallId")
    if not isinstance(call_id, str) or not call_id:
        raise ChatInputError(400, f"{where}.toolCallId must be a non-empty string")
    arguments = "{}" if part.get("input") is None else _json(part["input"], f"{where}.input")
    call = {"id": _unicode(call_id, f"{where}.toolCallId"), "type": "function",
            "function": {"name": _unicode(name, f"{where} tool name"), "arguments": arguments}}
    return call, {"role": "tool", "tool_call_id": call_id, "content": _result(where, part)}


def _result(where: str, part: dict[str, Any]) -> str:
    """What the model is told a finished call gave: its output, its error, or a denial."""
    state = part["state"]
    if state == "output-error":
        error = part.get("errorText")
        if not isinstance(error, str):
            raise ChatInputError(400, f"{where}.errorText must be a string")
        return _unicode(error, f"{where}.errorText")
    if state == "output-denied":
        approval = part.get("approval")
        reason = approval.get("reason") if isinstance(approval, dict) else None
        return _unicode(reason, f"{where}.approval.reason") if isinstance(reason, str) \
            else _DENIED
    output = part.get("output")
    if isinstance(output, str):
        return _unicode(output, f"{where}.output")
    return _json(output, f"{where}.output")


def _json(value: Any, what: str) -> str:
    """Compact JSON text of ``value``; NaN and Infinity (which Python's JSON reader lets
    in) are refused: no JSON reader upstream accepts them."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise ChatInputError(400, f"{what} must be a JSON value (no NaN or Infinity)") \
            from None
    return _unicode(text, what)


def _unicode(text: str, what: str) -> str:
    """``text`` unless it holds a lone surrogate (JSON ``"\\ud800"``): not text a model
    reads, and it cannot be encoded to send upstream."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ChatInputError(400, f"{what} must be valid Unicode text (no lone surrogates)") \
            from None
    return text


def _size(message: dict[str, Any]) -> int:
    """The characters a message costs against ``max_chars``: content, arguments, names."""
    size = len(message["content"])
    for call in message.get("tool_calls", ()):
        size += len(call["function"]["arguments"]) + len(call["function"]["name"])
    return size
