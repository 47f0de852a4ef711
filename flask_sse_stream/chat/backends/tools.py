"""Tools a model may call: plain typed Python functions (server-side) and explicit schemas.

``Tool.from_function(fn)`` (or just passing ``fn`` in ``OpenAIBackend(tools=[...])``)
builds the tool the model sees from the function itself: its ``__name__``, the first
paragraph of its docstring as the description, and a JSON schema from its signature:

==========================  ===========================================================
annotation                  schema
==========================  ===========================================================
``str`` ``int`` ``float``   ``{"type": "string"}``, ``"integer"``, ``"number"``,
``bool``                    ``"boolean"``
``list[X]``                 ``{"type": "array", "items": <X>}``
``dict``, ``dict[str, X]``  ``{"type": "object"}`` (``additionalProperties: <X>``)
``Literal["a", "b"]``       ``{"type": "string", "enum": ["a", "b"]}``; an ``Enum``
                            class gives its values
``X | None``                ``{"anyOf": [<X>, {"type": "null"}]}``; ``X | Y`` anyOf
``Annotated[X, "text"]``    ``<X>`` with ``"description": "text"``
no annotation, ``Any``      ``{}`` (any value)
==========================  ===========================================================

A parameter with a default is optional (and its default is in the schema); the others
are ``required``. Parameter descriptions come from an ``Args:`` section (Google style) or
``:param name:`` lines of the docstring. Unknown arguments are refused
(``additionalProperties: false``) unless the function takes ``**kwargs``.

The model's arguments are checked against the schema before the function runs
(:func:`check_arguments`: ``type``, ``properties``, ``required``,
``additionalProperties``, ``enum``, ``const``, ``items``, ``anyOf`` / ``oneOf`` /
``allOf``, ``nullable``; other keywords are ignored), so a function gets what its
signature says or the model gets an error result to correct itself with.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ... import runtime
from ...wire.event import compact_json
from ..parts import ToolResult

__all__ = ["Tool", "as_tool", "check_arguments", "function_schema", "run_tool"]

log = logging.getLogger("flask_sse_stream.chat")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what OpenAI accepts as a function name
_ARGS_HEADINGS = ("Args:", "Arguments:", "Parameters:", "Params:")
_PARAM_LINE = re.compile(r"(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[^:\n]*\s)?(\w+)\s*:\s*(.*)$", re.MULTILINE)
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


@dataclass(frozen=True)
class Tool:
    """A tool the model may call: ``name``, a JSON schema of its arguments, a description.

    With a ``function`` it is a **server-side** tool: the backend calls
    ``function(**arguments)`` when the model asks and gives the model the result. Without
    one it is a **client-side** tool: the model's call reaches the client as a
    ``ToolCall`` and the reply ends with ``finish_reason: "tool_calls"``; the client's
    next request carries the result.
    """

    name: str
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    description: str = ""
    function: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise ValueError(f"a tool name is 1 to 64 characters of A-Z a-z 0-9 _ -, "
                             f"not {self.name!r}")
        if not isinstance(self.parameters, Mapping):
            raise TypeError(f"Tool {self.name!r}: parameters must be a JSON schema (a dict)")
        if self.function is not None:
            if not callable(self.function):
                raise TypeError(f"Tool {self.name!r}: function must be callable")
            if inspect.iscoroutinefunction(self.function):
                raise TypeError(f"Tool {self.name!r}: async functions are not supported; "
                                "give a plain function")

    @classmethod
    def from_function(
        cls, function: Callable[..., Any], *, name: str | None = None,
        description: str | None = None,
    ) -> Tool:
        """The server-side tool of a typed function (see the module doc for the schema)."""
        doc = inspect.getdoc(function) or ""
        if description is None:
            first = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0] if doc.strip() else ""
            description = " ".join(first.split())
        return cls(
            name=name or str(getattr(function, "__name__", "")),
            parameters=function_schema(function),
            description=description,
            function=function,
        )

    @property
    def server_side(self) -> bool:
        """True when the backend runs it (it has a ``function``)."""
        return self.function is not None

    def schema(self) -> dict[str, Any]:
        """The tool as the ``tools`` entry of a Chat Completions request."""
        spec: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            spec["description"] = self.description
        return {"type": "function", "function": spec}

    def check(self, arguments: Any) -> str | None:
        """Why ``arguments`` do not fit the schema, or None when they do."""
        return check_arguments(arguments, self.parameters)


def as_tool(tool: Tool | Callable[..., Any]) -> Tool:
    """A :class:`Tool` as is; a function as :meth:`Tool.from_function` makes it."""
    if isinstance(tool, Tool):
        return tool
    if callable(tool):
        return Tool.from_function(tool)
    raise TypeError(f"a tool is a Tool or a function, not {tool!r}")


def run_tool(tool: Tool, call_id: str, arguments: dict[str, Any],
             timeout: float | None) -> ToolResult:
    """Call a server-side tool with checked ``arguments``; its result, or its failure as
    the error text the model sees: an exception (``"ValueError: no such city"``), no
    result within ``timeout`` seconds, or a result JSON cannot hold.

    Only ``Exception`` is caught: ``GreenletExit`` (the generation is cancelled) and
    ``GeneratorExit`` stop the tool and pass through.
    """
    function = tool.function
    if function is None:
        raise ValueError(f"{tool.name!r} is a client-side tool: the client runs it")

    def call() -> tuple[bool, Any]:
        try:
            return True, function(**arguments)
        except Exception as exc:  # the tool's own failure, told apart from the timeout
            return False, exc

    try:
        ok, value = call() if timeout is None else runtime.current().call_with_timeout(
            timeout, call)
    except TimeoutError:
        log.warning("chat tool %r: no result within %s s", tool.name, timeout)
        return ToolResult(call_id, error=f"the tool did not finish within {timeout:g} s")
    if not ok:
        log.warning("chat tool %r raised %s", tool.name, type(value).__name__, exc_info=value)
        text = " ".join(f"{type(value).__name__}: {value}".split())
        return ToolResult(call_id, error=text[:500])
    try:
        compact_json(value)
    except (TypeError, ValueError):
        log.warning("chat tool %r returned a %s, which JSON cannot hold", tool.name,
                    type(value).__name__)
        return ToolResult(call_id, error=f"the tool returned a {type(value).__name__}, "
                                         "which is not a JSON value")
    return ToolResult(call_id, result=value)


# --------------------------------------------------------------------------- schemas


def function_schema(function: Callable[..., Any]) -> dict[str, Any]:
    """The JSON schema (an object of named arguments) of ``function``'s signature."""
    where = getattr(function, "__qualname__", repr(function))
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function, include_extras=True)
    described = _parameter_docs(inspect.getdoc(function) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    closed = True
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            closed = False
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL,
                              inspect.Parameter.POSITIONAL_ONLY):
            raise TypeError(f"{where}: tool arguments are passed by name, so *{name} or a "
                            "positional-only parameter cannot be one")
        schema = type_schema(hints.get(name, Any), f"{where}({name})")
        if name in described and "description" not in schema:
            schema["description"] = described[name]
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
        elif _is_json(parameter.default):
            schema["default"] = parameter.default
        properties[name] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if closed:
        result["additionalProperties"] = False
    return result


def type_schema(annotation: Any, where: str = "") -> dict[str, Any]:
    """The JSON schema of one annotation; ``TypeError`` for one JSON cannot carry."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return {}
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_schema([member.value for member in annotation], where)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        schema = type_schema(args[0], where)
        notes = [note for note in args[1:] if isinstance(note, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if annotation is list or origin is list:
        items = type_schema(args[0], where) if args else {}
        return {"type": "array", "items": items} if items else {"type": "array"}
    if annotation is dict or origin is dict:
        values = type_schema(args[1], where) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": values} if values else {
            "type": "object"}
    if origin is typing.Literal:
        return _enum_schema(list(args), where)
    if origin is typing.Union or origin is types.UnionType:
        return {"anyOf": [type_schema(arg, where) for arg in args]}
    raise TypeError(f"{where}: {annotation!r} has no JSON schema here; use str, int, float, "
                    "bool, list[...], dict, Literal[...], X | None, or give an explicit "
                    "Tool(name, parameters)")


def _enum_schema(values: list[Any], where: str) -> dict[str, Any]:
    if not all(_is_json(value) for value in values):
        raise TypeError(f"{where}: enum values must be JSON values, not {values!r}")
    kinds = {_json_type(value) for value in values}
    schema: dict[str, Any] = {"enum": values}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), "enum": values}
    return schema


def _parameter_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from ``:param name: text`` lines or an ``Args:`` section."""
    docs = {m.group(1): m.group(2).strip() for m in _SPHINX_PARAM.finditer(doc)}
    in_section, current, indent = False, None, None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in _ARGS_HEADINGS:
            in_section, current, indent = True, None, None
            continue
        if not in_section or not stripped:
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            in_section = False  # the next section ("Returns:", ...)
            continue
        match = _PARAM_LINE.fullmatch(stripped)
        if match and (indent is None or depth <= indent):
            indent, current = depth, match.group(1)
            docs[current] = match.group(2).strip()
        elif current is not None:
            docs[current] = f"{docs[current]} {stripped}".strip()
    return docs


def _is_json(value: Any) -> bool:
    try:
        compact_json(value)  # as every request is encoded: no NaN, no infinities
    except (TypeError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- checking


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _has_type(value: Any, name: Any) -> bool:
    kind = _json_type(value)
    if name == "number":
        return kind in ("integer", "number")
    if name == "integer":
        return kind == "integer" or (kind == "number" and float(value).is_integer())
    if name in ("string", "boolean", "array", "object", "null"):
        return bool(kind == name)
    return True  # a type name this checker does not know: not its business


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``True`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path or 'arguments'}[{key}]"
    return f"{path}.{key}" if path else repr(key)


def check_arguments(value: Any, schema: Any, path: str = "") -> str | None:
    """Why ``value`` does not fit ``schema`` (the JSON-schema subset of the module doc),
    as a sentence the model can act on; None when it fits."""
    if not isinstance(schema, Mapping):
        return None  # ``true`` / absent: anything goes
    where = path or "the arguments"
    if value is None and schema.get("nullable") is True:
        return None
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options and all(
            check_arguments(value, option, path) is not None for option in options
        ):
            return f"{where} fits none of the allowed forms"
    options = schema.get("allOf")
    for option in options if isinstance(options, list) else ():
        problem = check_arguments(value, option, path)
        if problem:
            return problem
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if schema.get("nullable") is True:
            names = [*names, "null"]
        if not any(_has_type(value, name) for name in names):
            return f"{where} must be {' or '.join(map(str, names))}, not {_json_type(value)}"
    allowed = schema.get("enum")
    if isinstance(allowed, list) and not any(_same(value, option) for option in allowed):
        return f"{where} must be one of {json.dumps(allowed, ensure_ascii=False)}"
    if "const" in schema and not _same(value, schema["const"]):
        return f"{where} must be {json.dumps(schema['const'], ensure_ascii=False)}"
    if isinstance(value, dict):
        return _check_object(value, schema, path)
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        for index, item in enumerate(value):
            problem = check_arguments(item, items, _at(path, index))
            if problem:
                return problem
    return None


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> str | None:
    required = schema.get("required")
    for name in required if isinstance(required, list) else ():
        if isinstance(name, str) and name not in value:
            return f"{_at(path, name)} is required"
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problem = check_arguments(item, properties[name], _at(path, name))
        elif extra is False:
            problem = f"{_at(path, name)} is not an argument of this tool"
        else:
            problem = check_arguments(item, extra, _at(path, name))
        if problem:
            return problem
    return None
