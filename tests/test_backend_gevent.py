"""OpenAIBackend under gevent, as gunicorn's gevent worker runs it: a thousand concurrent
replies through one backend, tools stopped by the deadline and by a cancelled generation,
and connections kept alive between replies.

Each test runs a monkey-patched Python in a subprocess (gevent must patch before anything
imports ``socket``, and pytest's own process must stay unpatched) against the fake
upstream in this process; the subprocess prints one JSON line of what it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_openai import DEFAULT_PIECES, FakeOpenAI
from tests.fake_openai_parts import TOOL_REPLY_PREFIX

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD = 120.0
REPLY = "".join(DEFAULT_PIECES)

pytestmark = pytest.mark.slow  # subprocesses

PRELUDE = """
from gevent import monkey

monkey.patch_all()

import json
import sys
import time

import gevent
import gevent.event

from flask_sse_stream.chat import OpenAIBackend, ToolResult

base_url = sys.argv[1]


def text(items):
    return "".join(p for p in items if isinstance(p, str))
"""

MANY = PRELUDE + """
count = int(sys.argv[2])
backend = OpenAIBackend(base_url=base_url, api_key="sk-gevent", timeout=HANG_GUARD)


def one():
    return text(backend.stream([{"role": "user", "content": "mode:hold go"}]))


greenlets = [gevent.spawn(one) for _ in range(count)]
gevent.joinall(greenlets, timeout=HANG_GUARD)
print(json.dumps({
    "done": sum(1 for g in greenlets if g.successful()),
    "texts": sorted({g.value for g in greenlets if g.successful()}),
    "errors": sorted({repr(g.exception) for g in greenlets if g.exception})[:3],
}))
"""

TOOLS = PRELUDE + """
scenario = sys.argv[2]
events = []
started = gevent.event.Event()


def get_weather(city: str, unit: str = "c") -> str:
    started.set()
    try:
        gevent.sleep(3600)  # blocks cooperatively, as a socket read would
        return "never"
    except BaseException as exc:
        events.append(f"tool interrupted by {type(exc).__name__}")
        raise
    finally:
        events.append("tool finally")


backend = OpenAIBackend(base_url=base_url, api_key="sk-gevent", tools=[get_weather],
                        tool_timeout=0.3 if scenario == "timeout" else 3600)
messages = [{"role": "user", "content": "mode:tool_call weather?"}]
if scenario == "timeout":
    items = list(backend.stream(messages))
    results = [p for p in items if isinstance(p, ToolResult)]
    print(json.dumps({"events": events, "error": results[0].error, "text": text(items)}))
else:  # cancel: the generation's greenlet is killed while the tool blocks
    generation = gevent.spawn(lambda: list(backend.stream(messages)))
    started.wait(HANG_GUARD)
    generation.kill(block=True, timeout=HANG_GUARD)
    print(json.dumps({"events": events, "dead": generation.dead,
                      "value": type(generation.value).__name__}))
"""

KEEPALIVE = PRELUDE + """
backend = OpenAIBackend(base_url=base_url, api_key="sk-gevent")
texts = [text(backend.stream([{"role": "user", "content": f"n{i}"}])) for i in range(3)]
print(json.dumps({"texts": texts}))
"""


def run(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    source = f"HANG_GUARD = {HANG_GUARD}\n" + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", source, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(delay=0.0) as server:
        yield server


def test_a_thousand_concurrent_replies_through_one_backend(fake: FakeOpenAI) -> None:
    """All 1,000 upstream streams are open at the same moment (the fake holds each after
    its first piece until all are there): the pool does not cap them at httpx's 100."""
    count = 1000
    proc = run(MANY, fake.base_url, str(count))
    try:
        assert fake.wait_streams(count, timeout=HANG_GUARD), fake.open_streams
    finally:
        fake.release()
    seen = result(proc)
    assert seen == {"done": count, "texts": [REPLY], "errors": []}
    assert len(fake.requests) == count


def test_tool_timeout_interrupts_a_blocking_tool_under_gevent(fake: FakeOpenAI) -> None:
    seen = result(run(TOOLS, fake.base_url, "timeout"))
    # interrupted at the deadline (its finally ran), not abandoned as under threads
    assert seen["events"] == ["tool interrupted by Timeout", "tool finally"]
    assert seen["error"] == "the tool did not finish within 0.3 s"
    assert seen["text"].startswith(TOOL_REPLY_PREFIX)  # the model heard of it and answered
    assert len(fake.requests) == 2


def test_a_cancelled_generation_stops_its_running_tool(fake: FakeOpenAI) -> None:
    seen = result(run(TOOLS, fake.base_url, "cancel"))
    assert seen == {"events": ["tool interrupted by GreenletExit", "tool finally"],
                    "dead": True, "value": "GreenletExit"}
    assert len(fake.requests) == 1  # nothing asked of the model after the cancel


def test_replies_reuse_one_upstream_connection(fake: FakeOpenAI) -> None:
    seen = result(run(KEEPALIVE, fake.base_url))
    assert seen["texts"] == [REPLY] * 3
    assert fake.connections_accepted == 1
