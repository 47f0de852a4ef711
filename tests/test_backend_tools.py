"""Server-side tools from typed functions: their schema, the argument checker, running them.

Pure and in-process (threads): the gevent side of timeouts and cancellation is in
``tests/test_backend_gevent.py``.
"""

from __future__ import annotations

import enum
import json
import threading
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_sse_stream.chat import Tool, ToolResult
from flask_sse_stream.chat.backends.tools import (
    check_arguments,
    function_schema,
    run_tool,
    type_schema,
)
from flask_sse_stream.runtime import current

HANG_GUARD = 20.0


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def search(
    query: str,
    limit: int = 5,
    ratio: float = 0.5,
    exact: bool = False,
    tags: list[str] | None = None,
    filters: dict[str, int] | None = None,
    order: Literal["asc", "desc"] = "asc",
    colour: Colour = Colour.RED,
    note: Annotated[str, "free text for the log"] = "",
    anything: Any = None,
) -> list[str]:
    """Search the catalogue
    for products.

    Returns the names of the products found, best first.

    Args:
        query: the words to look for,
            in any order
        limit (int): how many results at most
    """
    return [query] * limit


def test_schema_from_a_typed_function() -> None:
    tool = Tool.from_function(search)
    assert tool.name == "search"
    assert tool.description == "Search the catalogue for products."
    assert tool.server_side
    parameters = tool.parameters
    assert parameters["type"] == "object"
    assert parameters["required"] == ["query"]
    assert parameters["additionalProperties"] is False
    props = parameters["properties"]
    assert props["query"] == {"type": "string",
                              "description": "the words to look for, in any order"}
    assert props["limit"] == {"type": "integer", "description": "how many results at most",
                              "default": 5}
    assert props["ratio"] == {"type": "number", "default": 0.5}
    assert props["exact"] == {"type": "boolean", "default": False}
    assert props["tags"] == {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                       {"type": "null"}], "default": None}
    assert props["filters"]["anyOf"][0] == {"type": "object",
                                            "additionalProperties": {"type": "integer"}}
    assert props["order"] == {"type": "string", "enum": ["asc", "desc"], "default": "asc"}
    assert props["colour"] == {"type": "string", "enum": ["red", "blue"]}  # no JSON default
    assert props["note"] == {"type": "string", "description": "free text for the log",
                             "default": ""}
    assert props["anything"] == {"default": None}
    assert tool.schema() == {"type": "function", "function": {
        "name": "search", "description": tool.description, "parameters": dict(parameters)}}
    json.dumps(tool.schema())  # a request can carry it


def test_sphinx_param_lines_and_kwargs() -> None:
    def lookup(city: str, **extra: Any) -> str:
        """Look a city up.

        :param city: the city's name
        """
        return city

    parameters = Tool.from_function(lookup).parameters
    assert parameters["properties"] == {"city": {"type": "string",
                                                 "description": "the city's name"}}
    assert "additionalProperties" not in parameters  # **extra takes any other argument
    assert check_arguments({"city": "Oslo", "zoom": 3}, parameters) is None


def test_function_without_docstring_or_arguments() -> None:
    def ping() -> str:
        return "pong"

    tool = Tool.from_function(ping)
    assert tool.description == ""
    assert tool.parameters == {"type": "object", "properties": {},
                               "additionalProperties": False}
    assert "description" not in tool.schema()["function"]


@pytest.mark.parametrize("annotation", [tuple[int, int], set[str], bytes, complex, object])
def test_unsupported_annotation_names_the_parameter(annotation: Any) -> None:
    def f(x: int, y: Any) -> None: ...

    f.__annotations__["y"] = annotation
    with pytest.raises(TypeError, match=r"f\(y\).*explicit"):
        function_schema(f)


def test_positional_only_async_and_bad_names_are_refused() -> None:
    def star(*values: int) -> None: ...

    def positional(x: int, /) -> None: ...

    async def coroutine(x: int) -> None: ...

    with pytest.raises(TypeError, match="by name"):
        Tool.from_function(star)
    with pytest.raises(TypeError, match="by name"):
        Tool.from_function(positional)
    with pytest.raises(TypeError, match="async"):
        Tool.from_function(coroutine)
    for name in ("", "has space", "x" * 65, "naïve"):
        with pytest.raises(ValueError, match="tool name"):
            Tool(name, {"type": "object"})
    with pytest.raises(TypeError, match="parameters"):
        Tool("ok", ["not", "a", "schema"])  # type: ignore[arg-type]


def test_explicit_tool_without_function_is_client_side() -> None:
    tool = Tool("ask_user", {"type": "object", "properties": {"question": {"type": "string"}},
                             "required": ["question"]}, description="Ask the user")
    assert not tool.server_side
    assert tool.schema()["function"]["description"] == "Ask the user"
    assert tool.check({"question": "Why?"}) is None
    assert tool.check({}) == "'question' is required"
    with pytest.raises(ValueError, match="client-side"):
        run_tool(tool, "call_1", {"question": "x"}, None)


# --------------------------------------------------------------------------- checking

OBJECT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "score": {"type": "number"},
        "flag": {"type": "boolean"},
        "mode": {"enum": [1, "one", None]},
        "items": {"type": "array", "items": {"type": "object", "required": ["id"],
                                             "properties": {"id": {"type": "integer"}}}},
        "maybe": {"type": "string", "nullable": True},
        "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "both": {"allOf": [{"type": "integer"}, {"enum": [1, 2]}]},
        "fixed": {"const": True},
        "free": {"x-unknown-keyword": 1, "minimum": 100},
    },
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(("value", "problem"), [
    ({"name": "a"}, None),
    ({"name": "a", "count": 2.0, "score": 1, "flag": False, "mode": None, "maybe": None,
      "either": 3, "both": 2, "fixed": True, "free": -5, "items": [{"id": 1}]}, None),
    ({}, "'name' is required"),
    ({"name": 1}, "'name' must be string, not integer"),
    ({"name": "a", "count": 1.5}, "'count' must be integer, not number"),
    ({"name": "a", "count": True}, "'count' must be integer, not boolean"),
    ({"name": "a", "score": "1"}, "'score' must be number, not string"),
    ({"name": "a", "flag": 1}, "'flag' must be boolean, not integer"),
    ({"name": "a", "mode": True}, '\'mode\' must be one of [1, "one", null]'),
    ({"name": "a", "mode": "two"}, '\'mode\' must be one of [1, "one", null]'),
    ({"name": "a", "items": [{"id": 1}, {}]}, "'items'[1].id is required"),
    ({"name": "a", "items": [{"id": "x"}]}, "'items'[0].id must be integer, not string"),
    ({"name": "a", "either": [1]}, "'either' fits none of the allowed forms"),
    ({"name": "a", "both": 3}, "'both' must be one of [1, 2]"),
    ({"name": "a", "fixed": 1}, "'fixed' must be true"),
    ({"name": "a", "other": 1}, "'other' is not an argument of this tool"),
    ([], "the arguments must be object, not array"),
])
def test_check_arguments(value: Any, problem: str | None) -> None:
    assert check_arguments(value, OBJECT) == problem


def test_check_arguments_type_lists_and_no_schema() -> None:
    assert check_arguments(None, {"type": ["string", "null"]}) is None
    assert check_arguments(3, {"type": ["string", "null"]}) == (
        "the arguments must be string or null, not integer")
    assert check_arguments({"x": object()}, True) is None
    assert check_arguments(1, {"type": "a-type-nobody-knows"}) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)
SCHEMA_KEYS = st.sampled_from(["type", "properties", "required", "enum", "items", "anyOf",
                               "oneOf", "allOf", "nullable", "const",
                               "additionalProperties", "x"])


@settings(max_examples=200, deadline=None)
@given(JSON, st.dictionaries(SCHEMA_KEYS, JSON, max_size=6))
def test_check_arguments_never_raises_on_hostile_schemas(value: Any, schema: Any) -> None:
    problem = check_arguments(value, schema)
    assert problem is None or isinstance(problem, str)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers() | st.none(), max_size=5), st.text(), st.booleans())
def test_values_of_the_annotated_types_fit_their_schema(numbers: list[int | None], text: str,
                                                        flag: bool) -> None:
    assert check_arguments(numbers, type_schema(list[int | None])) is None
    assert check_arguments(text, type_schema(str)) is None
    assert check_arguments(flag, type_schema(bool)) is None
    assert check_arguments(flag, type_schema(int)) is not None  # True is not 1 in JSON
    if numbers:
        assert check_arguments([*numbers, "x"], type_schema(list[int | None])) is not None


# --------------------------------------------------------------------------- running


def test_run_tool_result_exception_and_non_json() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    def fail(city: str) -> None:
        raise LookupError(f"no such city:\n {city}")

    def opaque() -> object:
        return object()

    assert run_tool(Tool.from_function(add), "c1", {"a": 2, "b": 3}, 5) == ToolResult(
        "c1", result=5)
    assert run_tool(Tool.from_function(fail), "c2", {"city": "Atlantis"}, 5) == ToolResult(
        "c2", error="LookupError: no such city: Atlantis")
    result = run_tool(Tool.from_function(opaque), "c3", {}, None)
    assert result.error == "the tool returned a object, which is not a JSON value"


def test_run_tool_timeout_under_threads_abandons_the_call() -> None:
    release = threading.Event()
    finished = threading.Event()

    def stuck() -> str:
        release.wait(HANG_GUARD)
        finished.set()
        return "late"

    result = run_tool(Tool.from_function(stuck), "c1", {}, 0.2)
    assert result == ToolResult("c1", error="the tool did not finish within 0.2 s")
    assert not finished.is_set()  # abandoned, still running in its thread
    release.set()
    assert finished.wait(HANG_GUARD)


def test_run_tool_lets_base_exceptions_through() -> None:
    class Stop(BaseException):
        pass

    def stopper() -> None:
        raise Stop

    for timeout in (None, 5.0):
        with pytest.raises(Stop):
            run_tool(Tool.from_function(stopper), "c1", {}, timeout)


def test_call_with_timeout_under_threads() -> None:
    run = current()
    assert not run.cooperative
    assert run.call_with_timeout(5.0, lambda: 42) == 42
    with pytest.raises(KeyError, match="inner"):
        run.call_with_timeout(5.0, lambda: dict[str, int]()["inner"])
    gate = threading.Event()
    with pytest.raises(TimeoutError):
        run.call_with_timeout(0.1, lambda: gate.wait(HANG_GUARD))
    gate.set()
