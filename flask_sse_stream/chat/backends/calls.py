"""The tool calls of one model request: fragments joined per index, checked against the
reply's tools, and the messages that give the model its calls and their results."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from ...wire.event import compact_json
from ..parts import ToolCall, ToolResult
from .base import BackendError, Message
from .tools import Tool

__all__ = ["Call", "Fragments", "RawCall", "Toolbox", "assistant_message", "tool_message"]


@dataclass
class RawCall:
    """One call as the model streamed it: its arguments still JSON text, in pieces."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class Fragments:
    """``delta.tool_calls`` fragments joined per ``index`` (calls may interleave).

    The first fragment of a call carries its ``id`` and ``name`` (kept from the first
    that has them: some servers repeat them), every one a piece of ``arguments``. A
    server that sends no ``index`` (older Ollama) sends whole calls: a new ``id`` starts
    a new call, a fragment with neither continues the last one.
    """

    __slots__ = ("_calls", "_last")

    def __init__(self) -> None:
        self._calls: dict[Any, RawCall] = {}
        self._last: Any = 0

    def add(self, fragments: list[dict[str, Any]]) -> None:
        for fragment in fragments:
            key = fragment.get("index")
            if not isinstance(key, int) or isinstance(key, bool):
                key = ("id", fragment["id"]) if fragment.get("id") else self._last
            self._last = key
            call = self._calls.get(key)
            if call is None:
                call = self._calls[key] = RawCall()
            if fragment.get("id") and not call.id:
                call.id = str(fragment["id"])
            function = fragment.get("function") or {}
            if function.get("name") and not call.name:
                call.name = str(function["name"])
            piece = function.get("arguments")
            if piece:
                call.arguments.append(piece if isinstance(piece, str) else compact_json(piece))

    def joined(self) -> list[RawCall]:
        calls = list(self._calls.values())
        for call in calls:
            if not call.name:
                raise BackendError("the model server sent a tool call without a name")
            call.id = call.id or f"call_{uuid.uuid4().hex[:24]}"
        return calls


@dataclass
class Call:
    """A model's call, checked: the part to yield, the tool to run, or why it cannot."""

    part: ToolCall
    raw: RawCall
    tool: Tool | None = None
    error: str | None = None
    pending: bool = False  # a client-side tool: the client answers it


class Toolbox:
    """The tools of one reply: the backend's, then the request's (the client's)."""

    def __init__(self, own: tuple[Tool, ...], schemas: list[dict[str, Any]],
                 requested: list[dict[str, Any]] | None) -> None:
        self.by_name = {tool.name: tool for tool in own}
        self.schemas = list(schemas)
        self.client_names: set[str] = set()
        for spec in requested or ():
            function = spec.get("function") if isinstance(spec, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if isinstance(name, str) and name in self.by_name:
                continue  # the backend's own tool of that name wins
            self.schemas.append(spec)
            if isinstance(name, str):
                self.client_names.add(name)

    def prepare(self, raw: RawCall) -> Call:
        arguments, error = parse_arguments("".join(raw.arguments))
        call = Call(ToolCall(raw.id, raw.name, arguments), raw)
        tool = self.by_name.get(raw.name)
        if tool is not None:
            call.error = error or _invalid(tool.check(arguments))
            call.tool = tool
            call.pending = call.error is None and tool.function is None
        elif raw.name in self.client_names:
            call.error = error
            call.pending = error is None
        else:
            call.error = error or f"there is no tool named {raw.name!r}"
        return call


def _invalid(problem: str | None) -> str | None:
    return None if problem is None else f"invalid arguments: {problem}"


def parse_arguments(text: str) -> tuple[dict[str, Any], str | None]:
    """The model's JSON arguments as a dict, or ``{}`` and why they are not one."""
    if not text.strip():
        return {}, None  # no arguments (some servers send "" for a call without any)
    try:
        value = json.loads(text)
    except ValueError as exc:
        return {}, f"the arguments are not valid JSON ({exc})"
    if not isinstance(value, dict):
        return {}, "the arguments must be a JSON object"
    return value, None


def assistant_message(text: str, calls: list[RawCall]) -> Message:
    """The model's step as the assistant message of the next request: its text and its
    calls, with the arguments as the model wrote them."""
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": "".join(call.arguments) or "{}"}}
            for call in calls
        ],
    }


def tool_message(result: ToolResult) -> Message:
    """A result as the ``tool`` message the model reads (an error as ``{"error": ...}``)."""
    if result.error is not None:
        content = compact_json({"error": result.error})
    elif isinstance(result.result, str):
        content = result.result
    else:
        content = compact_json(result.result)
    return {"role": "tool", "tool_call_id": result.id, "content": content}
