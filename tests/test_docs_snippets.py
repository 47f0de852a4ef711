"""Every Python snippet in README.md and the tutorials runs, and does what the text says.

Fenced ``python`` blocks are executed in order, in-process; an HTML comment right before a
fence tunes it:

- ``<!-- snippet: skip -->``: a fragment that cannot run on its own (use sparingly);
- ``<!-- snippet: continue -->``: run in the namespace of the previous block (it uses the
  ``app`` defined there); ``continue=NAME``: in the namespace of the block checked as NAME;
- ``<!-- snippet: check=NAME -->``: drive it with ``CHECKS[NAME]`` (the test client,
  ``read_events``) once all blocks ran, so it is shown to do what the text claims.

``js`` blocks are parsed with ``node --check``. The Chinese tutorial carries the same
examples and goes through the same checks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flask_sse_stream.testing import read_events
from tests.fake_openai import DEFAULT_PIECES, FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/tutorial.md", "docs/tutorial.zh-CN.md"]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*snippet:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    code: str
    options: dict[str, str] = field(default_factory=dict)


def blocks(doc: str) -> list[Block]:
    """The top-level fenced blocks of ``doc`` (indented fences, inside lists, are shown
    config such as nginx's, not code to run)."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        options: dict[str, str] = {}
        back = i - 1
        while back >= 0 and not lines[back].strip():
            back -= 1
        marker = MARKER.match(lines[back]) if back >= 0 else None
        if marker:
            for word in marker.group(1).split():
                key, _, value = word.partition("=")
                options[key] = value
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        found.append(Block(doc, i + 1, match.group(1), "\n".join(lines[i + 1:end]), options))
        i = end + 1
    return found


# --- checks: what each snippet claims, driven with the test client ----------------------


def check_quickstart(ns: dict[str, Any]) -> None:
    app, client = ns["app"], ns["app"].test_client()
    events = read_events(client.get("/countdown", buffered=False), count=1)
    assert (events[0].data, events[0].id) == ('{"n":10}', "10")
    events = read_events(client.get("/countdown", headers={"Last-Event-ID": "2"},
                                    buffered=False))
    assert [e.data for e in events] == ['{"n":1}', '{"n":0}', '{"done":true}']
    assert events[-1].event == "close"  # the page's handler closes the EventSource
    assert client.get("/countdown", headers={"Last-Event-ID": "0"}).status_code == 204
    subscriber = client.get("/stream?channel=news", buffered=False)
    published = app.test_client().post("/notify", json={"text": "hi"})
    [event] = read_events(subscriber, count=1)
    assert (json.loads(event.data), event.id) == ({"text": "hi"}, published.json["id"])


def check_testing(ns: dict[str, Any]) -> None:
    tests = [value for name, value in ns.items() if name.startswith("test_")]
    assert len(tests) >= 2
    for test in tests:
        test()


def check_chat(ns: dict[str, Any]) -> None:
    rules = {rule.rule for rule in ns["app"].url_map.iter_rules()}
    assert {"/chat/stream", "/chat/stream/<sse_any:stream_id>"} <= rules


def check_countdown(ns: dict[str, Any]) -> None:
    client = ns["app"].test_client()
    response = client.get("/countdown", buffered=False)
    first = read_events(response, count=1)[0]
    assert (first.data, first.id, first.retry) == ('{"n":10}', "10", 2000)
    events = read_events(client.get("/countdown", headers={"Last-Event-ID": "3"},
                                    buffered=False))
    assert [(e.event, e.data) for e in events] == [
        (None, '{"n":2}'), (None, '{"n":1}'), ("close", '{"done":true}')]
    assert client.get("/countdown", headers={"Last-Event-ID": "1"}).status_code == 204


def check_publish(ns: dict[str, Any]) -> None:
    # the snippet published before anyone listened: the channel's history replays it
    response = ns["app"].test_client().get("/stream?channel=ticker", buffered=False,
                                           headers={"Last-Event-ID": "0"})
    events = read_events(response, timeout=0.5)
    ticks = [e for e in events if e.event == "tick"]
    assert [json.loads(e.data) for e in ticks] == [{"tick": 42}]


def check_model(ns: dict[str, Any]) -> None:
    client = ns["app"].test_client()
    assert client.post("/ask", json={}).status_code == 400
    events = read_events(client.post("/ask", json={"question": "hi"}, buffered=False))
    pieces = [json.loads(e.data)["content"] for e in events if e.event is None]
    assert "".join(pieces) == "".join(DEFAULT_PIECES)
    assert events[-1].event == "close"
    assert json.loads(events[-1].data) == {"finish_reason": "stop"}


def check_tokens(ns: dict[str, Any]) -> None:
    client = ns["app"].test_client()
    token = client.get("/ticker-token").json["token"]
    assert client.get("/stream?channel=ticker").status_code == 401
    assert client.get(f"/stream?channel=other&token={token}").status_code == 403
    response = client.get(f"/stream?channel=ticker&token={token}", buffered=False)
    assert response.status_code == 200
    response.close()


def check_ai_sdk(ns: dict[str, Any]) -> None:
    rules = {rule.rule for rule in ns["app"].url_map.iter_rules()}
    assert {"/api/chat/<chat_id>/stream"} <= rules
    assert rules & {"/api/chat", "/api/chat/"}


def check_cors(ns: dict[str, Any]) -> None:
    preflight = ns["app"].test_client().options(
        "/api/chat", headers={"Origin": "https://app.example.com",
                              "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


def check_openai(ns: dict[str, Any]) -> None:
    client = ns["app"].test_client()
    assert client.get("/v1/models").json["data"][0]["id"] == "my-model"


def check_metrics(ns: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    app, sse = ns["app"], ns["sse"]

    def scrape() -> dict[str, float]:
        response = app.test_client().get("/metrics")
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain")
        return {sample.name: sample.value
                for family in text_string_to_metric_families(response.get_data(as_text=True))
                for sample in family.samples}

    before = scrape()
    with app.app_context():
        stats = sse.stats()
    assert before["sse_published_total"] == stats["published"]
    assert before["sse_open_streams"] == stats["open_streams"]
    assert {f"sse_{n}_total" for n in
            ("published", "delivered", "resumed", "resets", "overflow_disconnects")} <= set(before)
    subscriber = app.test_client().get("/stream?channel=scraped", buffered=False)
    with app.app_context():
        sse.publish("x", channel="scraped")
    assert len(read_events(subscriber, count=1)) == 1
    after = scrape()
    assert after["sse_published_total"] == before["sse_published_total"] + 1
    assert after["sse_delivered_total"] == before["sse_delivered_total"] + 1


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "metrics": check_metrics,
    "ai_sdk": check_ai_sdk,
    "cors": check_cors,
    "openai": check_openai,
    "quickstart": check_quickstart,
    "testing": check_testing,
    "chat": check_chat,
    "countdown": check_countdown,
    "publish": check_publish,
    "model": check_model,
    "tokens": check_tokens,
    "pytest": check_testing,
}


@pytest.fixture
def fast_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples sleep a second between events, as a demo should; not in a test."""
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda seconds: real_sleep(min(seconds, 0.001)))


@pytest.mark.parametrize("doc", DOCS)
def test_python_snippets_run(doc: str, fast_sleep: None, monkeypatch: pytest.MonkeyPatch
                             ) -> None:
    python = [b for b in blocks(doc) if b.lang == "python"]
    assert python, f"no python blocks found in {doc}"
    skipped = [b for b in python if "skip" in b.options]
    assert len(skipped) <= 2, "skip sparingly: make the snippet runnable instead"
    named: dict[str, dict[str, Any]] = {}
    previous: dict[str, Any] | None = None
    pending: list[tuple[str, dict[str, Any]]] = []
    with FakeOpenAI(delay=0) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        for block in python:
            if "skip" in block.options:
                continue
            if "continue" in block.options:
                source = block.options["continue"]
                ns = named[source] if source else previous
                assert ns is not None, f"{doc}:{block.line}: nothing to continue"
            else:
                ns = {"__name__": f"snippet_{block.line}"}
            code = compile(block.code, f"{doc}:{block.line}", "exec")
            exec(code, ns)  # our own documentation
            check = block.options.get("check")
            if check:
                named[check] = ns
                pending.append((check, ns))
            previous = ns
        # checked once every block ran: a later block may still add to the same app,
        # which Flask refuses after the first request
        for check, ns in pending:
            CHECKS[check](ns)
    checked = {b.options["check"] for b in python if "check" in b.options}
    assert checked, f"{doc}: no snippet is checked"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("doc", DOCS)
def test_js_snippets_parse(doc: str, tmp_path: Path) -> None:
    scripts = [b for b in blocks(doc) if b.lang in ("js", "javascript")]
    for block in scripts:
        path = tmp_path / f"snippet_{block.line}.mjs"
        path.write_text(block.code, encoding="utf-8")
        result = subprocess.run(["node", "--check", str(path)], capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{doc}:{block.line}: {result.stderr}"


def test_every_doc_has_snippets_and_no_unknown_markers() -> None:
    for doc in DOCS:
        for block in blocks(doc):
            unknown = set(block.options) - {"skip", "continue", "check"}
            assert not unknown, f"{doc}:{block.line}: unknown snippet option {unknown}"
            check = block.options.get("check")
            assert check is None or check in CHECKS, f"{doc}:{block.line}: no check {check!r}"
