"""The generation runner in process: every generation ends exactly once (a cancel before
its task ran, a second cancel while it writes its close, a cancel from threads), what a
backend yields becomes log entries, options reach only a backend that takes them, and
on_finish sees the whole reply.

The gevent cases run inside a greenlet (the runtime is gevent there, with no
monkey-patching); the thread cases in plain threads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from gevent.event import Event as GreenEvent

from flask_sse_stream.chat import (
    Data,
    Finish,
    FinishedReply,
    Reasoning,
    Source,
    ToolCall,
    ToolResult,
    Usage,
)
from flask_sse_stream.chat.entries import parse_entries
from flask_sse_stream.chat.runner import Generations
from flask_sse_stream.chat.store import MemoryGenerationStore
from flask_sse_stream.runtime.threads import ThreadMailbox

TRIES = 50


def in_greenlet(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` as gevent's runtime sees it: inside a greenlet."""
    return gevent.spawn(fn).get(timeout=30)


class ListBackend:
    def __init__(self, pieces: list[Any], hold: Any = None) -> None:
        self.pieces = pieces
        self.hold = hold  # waited on before the first piece (a model's first token)
        self.closed = 0

    def stream(self, messages: list[dict[str, Any]]) -> Iterator[Any]:
        try:
            if self.hold is not None:
                self.hold.wait()
            yield from self.pieces
        finally:
            self.closed += 1


class SlowFinishStore(MemoryGenerationStore):
    """A store whose close write waits (a Redis round trip) while a test cancels again."""

    def __init__(self) -> None:
        super().__init__()
        self.finishing = GreenEvent()
        self.release = GreenEvent()
        self.finishes = 0

    def finish(self, stream_id: str, close: dict[str, Any]) -> int:
        self.finishes += 1
        self.finishing.set()
        self.release.wait()
        return super().finish(stream_id, close)


def ended_once(record: list[str]) -> Callable[[], None]:
    return lambda: record.append("x")


def entries(store: MemoryGenerationStore, stream_id: str) -> list[Any]:
    follow = store.follow(stream_id, 0, ThreadMailbox(100))
    return parse_entries(follow.prelude)


def test_a_cancel_before_the_task_ran_still_ends_the_generation() -> None:
    """A double submit: the later request cancels the earlier reply before its greenlet
    ran. The generation still writes its close and frees its place, every time."""

    def run() -> None:
        for n in range(TRIES):
            store = MemoryGenerationStore()
            ended: list[str] = []
            generations = Generations(store, ListBackend(["never"]), grace=30)
            generations.start(f"g{n}", [{"role": "user", "content": "hi"}],
                              on_end=ended_once(ended))
            assert generations.cancel(f"g{n}", wait=False)  # before its greenlet ran
            gevent.sleep(0.01)
            [close] = entries(store, f"g{n}")
            assert close.close and close.data == {"finish_reason": "cancelled"}
            assert ended == ["x"] and len(generations) == 0

    in_greenlet(run)


def test_a_second_cancel_during_the_close_write_changes_nothing() -> None:
    def run() -> None:
        for n in range(TRIES):
            store = SlowFinishStore()
            hold = GreenEvent()
            ended: list[str] = []
            generations = Generations(store, ListBackend(["a"], hold=hold), grace=30)
            generations.start(f"g{n}", [], on_end=ended_once(ended))
            gevent.sleep(0)  # the task runs and waits for its first piece
            generations.cancel(f"g{n}", wait=False)  # interrupts it
            assert store.finishing.wait(5)
            for _ in range(3):  # two DELETEs at once, the grace timer...
                generations.cancel(f"g{n}", wait=False)
            store.release.set()
            gevent.sleep(0.01)
            assert ended == ["x"] and len(generations) == 0
            assert store.finishes == 1
            assert entries(store, f"g{n}")[-1].data == {"finish_reason": "cancelled"}

    in_greenlet(run)


def test_a_cancel_from_another_thread_stops_at_the_next_piece() -> None:
    release = threading.Event()

    class Gated:
        def stream(self, messages: list[dict[str, Any]]) -> Iterator[str]:
            yield "first "
            while not release.wait(0.005):
                yield ""

    store = MemoryGenerationStore()
    generations = Generations(store, Gated(), grace=30)
    generations.start("t", [])
    assert generations.cancel("t", wait=True)
    kinds = [(e.kind, e.data) for e in entries(store, "t")]
    assert kinds[-1] == ("close", {"finish_reason": "cancelled"})
    assert len(generations) == 0


def test_parts_become_entries_and_an_unanswered_tool_call_closes_with_tool_calls() -> None:
    pieces = [Reasoning("think"), "text ", ToolCall("c1", "lookup", {"q": 1}),
              ToolResult("c1", result=[1, 2]), Data("d", {"x": 1}), Source("https://e.x"),
              ToolCall("c2", "ask_user", {}), Usage(1, 2, 3)]
    store = MemoryGenerationStore()
    replies: list[FinishedReply] = []
    generations = Generations(store, ListBackend(pieces), grace=30, on_finish=replies.append)
    generations.start("p", [{"role": "user", "content": "hi"}])
    assert in_greenlet(lambda: gevent.sleep(0.05) or True)
    got = entries(store, "p")
    assert [e.kind for e in got] == ["reasoning", "text", "tool-call", "tool-result", "data",
                                     "source", "tool-call", "close"]
    assert got[-1].data == {"finish_reason": "tool_calls",
                            "usage": {"prompt_tokens": 1, "completion_tokens": 2,
                                      "total_tokens": 3}}
    [reply] = replies
    assert reply.text == "text " and reply.finish_reason == "tool_calls"
    assert reply.parts == pieces[:-1]


def test_the_models_own_finish_reason_wins_and_a_bad_piece_is_an_error_close() -> None:
    store = MemoryGenerationStore()
    generations = Generations(store, ListBackend(["a", Finish("length")]), grace=30)
    generations.start("f", [])
    bad = Generations(store, ListBackend(["a", object()]), grace=30)
    bad.start("b", [])
    nan = Generations(store, ListBackend([Data("d", float("nan"))]), grace=30)
    nan.start("n", [])
    in_greenlet(lambda: gevent.sleep(0.05))
    assert entries(store, "f")[-1].data == {"finish_reason": "length"}
    assert entries(store, "b")[-1].data["finish_reason"] == "error"
    assert entries(store, "n")[-1].data["finish_reason"] == "error"


@pytest.mark.parametrize("takes", ["both", "kwargs", "none"])
def test_tools_reach_only_a_backend_whose_stream_takes_them(takes: str) -> None:
    seen: list[dict[str, Any]] = []

    class Both:
        def stream(self, messages: Any, *, tools: Any = None, tool_choice: Any = None) -> Any:
            seen.append({"tools": tools, "tool_choice": tool_choice})
            yield "x"

    class Kwargs:
        def stream(self, messages: Any, **options: Any) -> Any:
            seen.append(options)
            yield "x"

    class Neither:
        def stream(self, messages: Any) -> Any:
            seen.append({})
            yield "x"

    backend: Any = {"both": Both, "kwargs": Kwargs, "none": Neither}[takes]()
    store = MemoryGenerationStore()
    generations = Generations(store, backend, grace=30)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    generations.start("o", [], options={"tools": tools, "tool_choice": "auto", "junk": 1})
    in_greenlet(lambda: gevent.sleep(0.05))
    expected = {} if takes == "none" else {"tools": tools, "tool_choice": "auto"}
    assert seen == [expected]
    assert json.loads(json.dumps(entries(store, "o")[-1].data)) == {"finish_reason": "stop"}
