"""What the two OpenAI wire formats (Chat Completions and Responses) share.

* :func:`bad`: a refused request with the OpenAI ``param`` it is about;
* :class:`ClientToolCalls`: which log entries these endpoints show. They show text,
  reasoning and **client-side** tool calls only: a ``tool-call`` entry whose
  ``tool-result`` (same id) follows ran on the server, and its call and result stay on
  the server. A call is held back until the next text, reasoning or close entry; a result
  for it in the meantime drops it;
* the checks of function tools and ``tool_choice`` (both request shapes become the
  backend's Chat Completions shape), of text and of the conversation's size;
* the end of a reply (:func:`failure`, :func:`usage_counts`).

Pure: no Flask, no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from ..entries import CLOSE, REASONING, TEXT, TOOL_CALL, TOOL_RESULT, Entry
from ..validation import ChatInputError, ChatLimits

__all__ = [
    "ClientToolCalls",
    "bad",
    "check_conversation",
    "check_text",
    "check_tool_choice",
    "check_tools",
    "failure",
    "usage_counts",
]

MAX_TOOLS = 128  # OpenAI's own limit on a request's tools
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
TOOL_CHOICES = ("none", "auto", "required")


def bad(param: str, message: str, status: int = 400) -> ChatInputError:
    """A 400 about ``param`` (the field OpenAI's error body names, e.g.
    ``"messages[2].content"``)."""
    return ChatInputError(status, message, param=param)


def failure(data: dict[str, Any]) -> str | None:
    """The error message of a close entry that is not a normal end (None if it is)."""
    reason = data.get("finish_reason")
    if reason == "error":
        return str(data.get("error") or "the reply failed")
    if reason == "cancelled":
        return "the reply was cancelled"
    return None


def usage_counts(data: dict[str, Any]) -> dict[str, int]:
    """A close entry's usage as Chat Completions counts (0 where the backend said
    nothing; the total is the sum when only the parts are known)."""
    usage = data.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or 0) or prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


class ClientToolCalls:
    """Turns the log's entries into the ones an OpenAI endpoint acts on.

    :meth:`feed` returns, in order: text, reasoning and close entries, client-side tool
    calls (held until the next text, reasoning or close entry), and the ``tool-result``
    of a held call (the end of a server-side step: never shown, but the Responses framer
    ends its open output item there). Data and source entries are not shown and decide
    nothing. A reply that fails or is cancelled drops the calls it still holds: nobody
    should run a tool for a reply that did not end.
    """

    def __init__(self) -> None:
        self._held: list[Entry] = []

    def feed(self, entry: Entry) -> list[Entry]:
        if entry.kind == TOOL_CALL:
            self._held.append(entry)
            return []
        if entry.kind == TOOL_RESULT:
            call_id = entry.data.get("id")
            kept = [call for call in self._held if call.data.get("id") != call_id]
            served = len(kept) != len(self._held)
            self._held = kept
            return [entry] if served else []
        if entry.kind in (TEXT, REASONING, CLOSE):
            held, self._held = self._held, []
            if entry.kind == CLOSE and failure(entry.data) is not None:
                return [entry]
            return [*held, entry]
        return []


def text_ok(value: str) -> bool:
    """True if ``value`` is text a model can read (a lone surrogate, JSON ``"\\ud800"``,
    is not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: Any, param: str, *, empty: bool = False) -> str:
    """``value`` as a string of valid Unicode (non-empty unless ``empty``)."""
    if not isinstance(value, str):
        raise bad(param, f"Invalid type for '{param}': expected a string.")
    if not empty and not value.strip():
        raise bad(param, f"'{param}' must not be empty.")
    if not text_ok(value):
        raise bad(param, f"'{param}' must be valid Unicode text (no lone surrogates).")
    return value


def check_conversation(messages: list[dict[str, Any]], limits: ChatLimits,
                       param: str) -> list[dict[str, Any]]:
    """The backend messages, bounded as every chat route bounds them: at most
    ``max_messages`` (plus one for instructions), ``max_chars`` of text in all (contents
    and tool arguments), and at least one user message."""
    if len(messages) > limits.max_messages + 1:
        raise bad(param, f"at most {limits.max_messages} messages", 413)
    total = 0
    for message in messages:
        total += len(message.get("content") or "")
        for call in message.get("tool_calls") or ():
            total += len(call["function"]["arguments"])
    if total > limits.max_chars:
        raise bad(param, f"'{param}' is longer than {limits.max_chars} characters", 413)
    if not any(message["role"] == "user" for message in messages):
        raise bad(param, f"'{param}' needs at least one user message.")
    return messages


def function_tool(name: Any, description: Any, parameters: Any, strict: Any,
                  param: str) -> dict[str, Any]:
    """One function tool in the backend's (Chat Completions) shape, checked."""
    if not isinstance(name, str) or _TOOL_NAME.fullmatch(name) is None:
        raise bad(f"{param}.name", f"Invalid '{param}.name': a function name is 1 to 64 "
                                   "characters of a-z, A-Z, 0-9, _ and -.")
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = check_text(description, f"{param}.description", empty=True)
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise bad(f"{param}.parameters",
                      f"Invalid type for '{param}.parameters': expected a JSON schema object.")
        function["parameters"] = parameters
    if strict is not None:
        if not isinstance(strict, bool):
            raise bad(f"{param}.strict", f"Invalid type for '{param}.strict': expected a boolean.")
        function["strict"] = strict
    return {"type": "function", "function": function}


def check_tools(value: Any, *, flat: bool) -> list[dict[str, Any]] | None:
    """A request's ``tools`` as backend (Chat Completions) function tools, or None.

    ``flat``: the Responses shape (``{"type": "function", "name", ...}``); else Chat
    Completions' (``{"type": "function", "function": {"name", ...}}``). Any other kind of
    tool (built-in web or file search, custom tools, MCP, ...) is refused: dropping it
    would silently change what the model can do.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad("tools", "Invalid type for 'tools': expected an array of tools.")
    if len(value) > MAX_TOOLS:
        raise bad("tools", f"'tools' holds at most {MAX_TOOLS} tools.")
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise bad(param, f"Invalid type for '{param}': expected an object.")
        kind = tool.get("type")
        if kind != "function":
            raise bad(f"{param}.type", f"Tool type {kind!r} in '{param}' is not supported: "
                                       "this server runs function tools only.")
        spec = tool if flat else tool.get("function")
        where = param if flat else f"{param}.function"
        if not isinstance(spec, dict):
            raise bad(where, f"Missing required parameter: '{where}'.")
        tools.append(function_tool(spec.get("name"), spec.get("description"),
                                   spec.get("parameters"), spec.get("strict"), where))
    names = [tool["function"]["name"] for tool in tools]
    if len(set(names)) != len(names):
        raise bad("tools", "Function names in 'tools' must be unique.")
    return tools


def check_tool_choice(value: Any, tools: list[dict[str, Any]] | None, *,
                      flat: bool) -> str | dict[str, Any] | None:
    """A request's ``tool_choice`` in the backend's (Chat Completions) shape, or None.

    ``"none"``, ``"auto"``, ``"required"`` or one named function (``flat``: Responses'
    ``{"type": "function", "name"}``, else ``{"type": "function", "function": {"name"}}``)
    that ``tools`` declares. ``"required"`` or a name without tools is refused, as are
    the choices of built-in tools and ``allowed_tools``.
    """
    if value is None:
        return None
    names = {tool["function"]["name"] for tool in tools or ()}
    if isinstance(value, str):
        if value not in TOOL_CHOICES:
            raise bad("tool_choice", f"Invalid value for 'tool_choice': {value!r}. Supported "
                                     "values are: 'none', 'auto' and 'required'.")
        if value == "required" and not names:
            raise bad("tool_choice", "tool_choice 'required' needs 'tools'.")
        return value
    if not isinstance(value, dict) or value.get("type") != "function":
        kind = value.get("type") if isinstance(value, dict) else None
        raise bad("tool_choice", f"tool_choice {kind or value!r} is not supported: name a "
                                 "function tool or use 'none', 'auto' or 'required'.")
    spec = value if flat else value.get("function")
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str) or name not in names:
        raise bad("tool_choice", f"tool_choice names the function {name!r}, which 'tools' "
                                 "does not declare.")
    return {"type": "function", "function": {"name": name}}
