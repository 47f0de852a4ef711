"""A Responses API request (``POST /responses``) as what the backend gets.

``input`` is a string (one user message) or a list of items: messages (``role``
``user`` / ``system`` / ``developer`` / ``assistant``, content a string or
``input_text`` / ``output_text`` parts), ``function_call`` items (they become the
assistant's ``tool_calls``, consecutive calls one assistant message) and
``function_call_output`` items (``tool`` messages, each answering an earlier call).
``reasoning`` items a client passes back (``input += response.output``) are dropped:
backends take no reasoning in their messages, as chat templates drop earlier thinking.
``instructions`` is a system message first. ``tools`` are function tools.

Refused with an OpenAI-shaped 400 naming the field, because answering would silently
change what the client asked for: ``previous_response_id`` and ``conversation`` (nothing
is stored), ``background``, stored ``prompt``\\ s, ``item_reference`` and every other
item type, non-text content (images, files, audio), built-in and non-function tools,
and a ``text.format`` other than plain text (structured output). Sampling hints
(``temperature``, ``top_p``, ``max_output_tokens``, ``reasoning``, ...) are echoed in the
response and not enforced, as on Chat Completions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..validation import ChatLimits
from .openai_shared import bad, check_conversation, check_text, check_tool_choice, check_tools

__all__ = ["ResponsesRequest", "responses_input", "responses_request"]

ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
TEXT_PARTS = frozenset({"input_text", "output_text"})
_UNSTORED = {
    "previous_response_id": "this server does not store responses: send the whole "
                            "conversation as 'input'",
    "conversation": "this server does not store conversations: send the whole "
                    "conversation as 'input'",
    "prompt": "stored prompts are not supported: send 'instructions' and 'input'",
}


@dataclass(frozen=True)
class ResponsesRequest:
    """A checked Responses request: what the backend gets (``messages``, ``tools`` and
    ``tool_choice`` in the Chat Completions shape), whether to stream, and ``echo``: the
    request's settings as the ``response`` object repeats them."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None
    stream: bool
    echo: dict[str, Any]


def responses_request(body: dict[str, Any], limits: ChatLimits) -> ResponsesRequest:
    """A Responses request body, checked; else a 4xx ``ChatInputError`` naming the
    ``param``."""
    _refuse_unsupported(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream", "Invalid type for 'stream': expected a boolean.")
    if "model" in body and not isinstance(body["model"], str):
        raise bad("model", "Invalid type for 'model': expected a string.")
    instructions = body.get("instructions")
    if instructions is not None:
        check_text(instructions, "instructions", empty=True)
    tools = check_tools(body.get("tools"), flat=True)
    tool_choice = check_tool_choice(body.get("tool_choice"), tools, flat=True)
    messages = responses_input(body.get("input"), limits)
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    return ResponsesRequest(
        messages=check_conversation(messages, limits, "input"),
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        echo=_echo(body, tools, tool_choice),
    )


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, why in _UNSTORED.items():
        if body.get(name) is not None:
            raise bad(name, f"'{name}' is not supported: {why}.")
    if body.get("background"):
        raise bad("background", "'background' is not supported: stream the response, or "
                                "wait for it.")
    text = body.get("text")
    if text is not None:
        fmt = text.get("format") if isinstance(text, dict) else None
        if not isinstance(text, dict) or (fmt is not None and (
                not isinstance(fmt, dict) or fmt.get("type") != "text")):
            raise bad("text.format", "Only plain text output is supported ('text.format' "
                                     "must be {\"type\": \"text\"}).")


def _echo(body: dict[str, Any], tools: list[dict[str, Any]] | None,
          tool_choice: str | dict[str, Any] | None) -> dict[str, Any]:
    """The settings the ``response`` object repeats, checked so that it stays valid."""
    echo: dict[str, Any] = {
        "instructions": body.get("instructions"),
        # the tools as the client declared them, in the Responses shape
        "tools": [{"type": "function", **tool["function"]} for tool in tools or ()],
        "tool_choice": ({"type": "function", "name": tool_choice["function"]["name"]}
                        if isinstance(tool_choice, dict) else tool_choice or "auto"),
    }
    for name, kinds in (("temperature", (int, float)), ("top_p", (int, float)),
                        ("max_output_tokens", (int,)), ("parallel_tool_calls", (bool,))):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise bad(name, f"Invalid type for '{name}'.")
        echo[name] = value
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise bad("metadata", "Invalid type for 'metadata': expected an object of strings.")
        echo["metadata"] = metadata
    return echo


def responses_input(value: Any, limits: ChatLimits) -> list[dict[str, Any]]:
    """``input`` (a string or a list of items) as backend messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": check_text(value, "input")}]
    if not isinstance(value, list) or not value:
        raise bad("input", "'input' must be a string or a non-empty array of items.")
    if len(value) > limits.max_messages:
        raise bad("input", f"'input' holds at most {limits.max_messages} items.", 413)
    messages: list[dict[str, Any]] = []
    calls: set[str] = set()
    for index, item in enumerate(value):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise bad(param, f"Invalid type for '{param}': expected an object.")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            call = _function_call(item, param)
            calls.add(call["id"])
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(_function_output(item, param, calls))
        elif kind != "reasoning":
            raise bad(f"{param}.type", f"Input item type {kind!r} in '{param}' is not "
                                       "supported: send messages, function_call and "
                                       "function_call_output items.")
    return messages


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    name = item.get("role")
    role = ROLES.get(name) if isinstance(name, str) else None
    if role is None:
        raise bad(f"{param}.role", f"Invalid value for '{param}.role': {name!r}. Supported "
                                   "values are: 'user', 'system', 'developer' and "
                                   "'assistant'.")
    return {"role": role, "content": _content(item.get("content"), f"{param}.content")}


def _content(value: Any, param: str, *, empty: bool = False) -> str:
    """Message content (a string or text parts) as one string."""
    if isinstance(value, list):
        texts = []
        for index, part in enumerate(value):
            where = f"{param}[{index}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in TEXT_PARTS:
                raise bad(f"{where}.type", f"Content part type {kind!r} in '{where}' is not "
                                           "supported: this server takes text only.")
            texts.append(check_text(part.get("text"), f"{where}.text", empty=True))
        value = "".join(texts)
    return check_text(value, param, empty=empty)


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    return {
        "id": check_text(item.get("call_id"), f"{param}.call_id"),
        "type": "function",
        "function": {"name": check_text(item.get("name"), f"{param}.name"),
                     "arguments": check_text(item.get("arguments"), f"{param}.arguments",
                                             empty=True)},
    }


def _function_output(item: dict[str, Any], param: str, calls: set[str]) -> dict[str, Any]:
    call_id = check_text(item.get("call_id"), f"{param}.call_id")
    if call_id not in calls:
        raise bad(f"{param}.call_id", f"'{param}' answers the call {call_id!r}, which no "
                                      "earlier function_call item made.")
    output = _content(item.get("output"), f"{param}.output", empty=True)
    return {"role": "tool", "tool_call_id": call_id, "content": output}
