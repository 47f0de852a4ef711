"""Every Python snippet of the README and of the docs pages runs, and does what the text says.

The documents are README.md and every page under docs/ (the site's pages, the tutorials
included). Fenced ``python`` blocks are executed in order, in-process; an HTML comment
right before a fence tunes it:

- ``<!-- snippet: skip -->``: a fragment that cannot run on its own (use sparingly);
- ``<!-- snippet: continue -->``: run in the namespace of the previous block (it uses the
  ``app`` defined there); ``continue=NAME``: in the namespace of the block checked as NAME
  in the same document; ``continue=PAGE#NAME``: of the block checked as NAME in another
  document (a path relative to this one, as in a link: ``getting-started.md#quickstart``),
  whose blocks are then run up to that one, so a page can build on another page's app;
- ``<!-- snippet: check=NAME -->``: drive it with ``CHECKS[NAME]`` (the test client,
  ``read_events``) once all blocks ran, so it is shown to do what the text claims.

``js`` blocks are parsed with ``node --check``. Every check is used by some document, so
a snippet moved from one page to another stays tested. The Chinese tutorial carries the
same examples and goes through the same checks.
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
DOCS = ["README.md", *sorted(p.relative_to(ROOT).as_posix()
                             for p in (ROOT / "docs").rglob("*.md"))]
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


def python_blocks(doc: str) -> list[Block]:
    return [b for b in blocks(doc) if b.lang == "python"]


def js_blocks(doc: str) -> list[Block]:
    return [b for b in blocks(doc) if b.lang in ("js", "javascript")]


DOCS_WITH_PYTHON = [doc for doc in DOCS if python_blocks(doc)]
DOCS_WITH_JS = [doc for doc in DOCS if js_blocks(doc)]


def other_doc(doc: str, target: str) -> tuple[str, str]:
    """``PAGE#NAME`` of a ``continue`` in ``doc``: the other document (from the repository
    root) and the check name."""
    page, _, name = target.partition("#")
    path = ((ROOT / doc).parent / page).resolve()
    return path.relative_to(ROOT).as_posix(), name


class Snippets:
    """Runs documents' Python blocks; a namespace continued from another document is
    made once per run (its blocks up to the named one) and then shared."""

    def __init__(self) -> None:
        self.imported: dict[tuple[str, str], dict[str, Any]] = {}

    def run(self, doc: str, stop_at: str | None = None
            ) -> list[tuple[str, dict[str, Any]]]:
        """Execute ``doc``'s blocks in order (up to the one checked as ``stop_at``); the
        (check, namespace) of every checked block."""
        named: dict[str, dict[str, Any]] = {}
        previous: dict[str, Any] | None = None
        checked: list[tuple[str, dict[str, Any]]] = []
        for block in python_blocks(doc):
            if "skip" in block.options:
                continue
            ns = self.namespace(block, named, previous)
            code = compile(block.code, f"{doc}:{block.line}", "exec")
            exec(code, ns)  # our own documentation
            check = block.options.get("check")
            if check:
                named[check] = ns
                checked.append((check, ns))
                if check == stop_at:
                    return checked
            previous = ns
        assert stop_at is None, f"{doc}: no block is checked as {stop_at!r}"
        return checked

    def namespace(self, block: Block, named: dict[str, dict[str, Any]],
                  previous: dict[str, Any] | None) -> dict[str, Any]:
        where = f"{block.doc}:{block.line}"
        if "continue" not in block.options:
            return {"__name__": f"snippet_{block.line}"}
        source = block.options["continue"]
        if not source:
            assert previous is not None, f"{where}: nothing to continue"
            return previous
        if "#" not in source:
            assert source in named, f"{where}: no block above is checked as {source!r}"
            return named[source]
        key = other_doc(block.doc, source)
        assert key[0] != block.doc, f"{where}: continue=NAME within the same document"
        if key not in self.imported:
            self.imported[key] = dict(self.run(key[0], stop_at=key[1]))[key[1]]
        return self.imported[key]


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


def check_parts(ns: dict[str, Any]) -> None:
    client = ns["app"].test_client()
    events = read_events(client.post("/chat/stream", json={"message": "weather?"},
                                     buffered=False))
    kinds = [e.event or "message" for e in events]
    assert kinds == ["reasoning", "reasoning", "tool-call", "tool-result", "source", "data",
                     "message", "close"]
    assert json.loads(events[2].data) == {"id": "call_1", "name": "get_weather",
                                          "arguments": {"city": "Paris"}}
    assert json.loads(events[-1].data) == {"finish_reason": "stop"}


def check_tools(ns: dict[str, Any]) -> None:
    tools = {tool.name: tool for tool in ns["backend"].tools}
    schema = tools["get_weather"].schema()["function"]
    assert schema["description"] == "The current weather in a city."
    assert schema["parameters"]["required"] == ["city"]
    assert schema["parameters"]["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert tools["get_weather"].server_side and not tools["get_location"].server_side


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
    "parts": check_parts,
    "tools": check_tools,
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


@pytest.mark.parametrize("doc", DOCS_WITH_PYTHON)
def test_python_snippets_run(doc: str, fast_sleep: None, monkeypatch: pytest.MonkeyPatch
                             ) -> None:
    python = python_blocks(doc)
    skipped = [b for b in python if "skip" in b.options]
    assert len(skipped) <= 2, "skip sparingly: make the snippet runnable instead"
    with FakeOpenAI(delay=0) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        pending = Snippets().run(doc)
        # checked once every block ran: a later block may still add to the same app,
        # which Flask refuses after the first request
        for check, ns in pending:
            CHECKS[check](ns)
    assert pending, f"{doc}: no snippet is checked"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("doc", DOCS_WITH_JS)
def test_js_snippets_parse(doc: str, tmp_path: Path) -> None:
    for block in js_blocks(doc):
        path = tmp_path / f"snippet_{block.line}.mjs"
        path.write_text(block.code, encoding="utf-8")
        result = subprocess.run(["node", "--check", str(path)], capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{doc}:{block.line}: {result.stderr}"


def test_snippet_markers_are_known_and_every_check_is_used() -> None:
    used: set[str] = set()
    for doc in DOCS:
        for block in blocks(doc):
            where = f"{doc}:{block.line}"
            unknown = set(block.options) - {"skip", "continue", "check"}
            assert not unknown, f"{where}: unknown snippet option {unknown}"
            check = block.options.get("check")
            assert check is None or check in CHECKS, f"{where}: no check {check!r}"
            used.add(check or "")
            source = block.options.get("continue", "")
            if "#" in source:
                page, name = other_doc(doc, source)
                assert (ROOT / page).is_file(), f"{where}: no document {page}"
                targets = {b.options.get("check") for b in python_blocks(page)}
                assert name in targets, f"{where}: {page} has no block checked as {name!r}"
    unused = set(CHECKS) - used
    assert not unused, f"checks no document uses (a snippet was lost?): {sorted(unused)}"
    assert "quickstart" in {b.options.get("check") for b in python_blocks("README.md")}


def test_architecture_page_names_every_module_and_only_real_ones() -> None:
    """The page's tables name each module of the package (or its package, for one
    described as a whole); its picture names each package."""
    package = ROOT / "flask_sse_stream"
    if not (package / "wire").is_dir():
        pytest.skip("the package is not yet in the layout the architecture page describes")
    page = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `([\w./]+)` \|", page, re.MULTILINE))
    assert not sorted(n for n in named if not (package / n).exists()), "named, not there"
    dirs = [n for n in named if n.endswith("/")]
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    unnamed = sorted(m for m in modules
                     if m not in named and not any(m.startswith(d) for d in dirs)
                     and not (m.endswith("/__init__.py") and m.count("/") >= 1))
    assert not unnamed, f"modules the architecture page does not name: {unnamed}"
    picture = page.split("```mermaid", 1)[1].split("```", 1)[0]
    packages = {m.split("/", 1)[0] for m in modules if "/" in m}
    assert not sorted(p for p in packages if f"{p}/" not in picture), "not in the picture"


def github_slug(heading: str) -> str:
    """The anchor GitHub (and the site, with pymdownx.slugs) gives a heading."""
    text = re.sub(r"[`*_\[\]()]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_readme_links_reach_existing_files_and_headings() -> None:
    """The README is not part of the site, so mkdocs does not check its links: this does
    (they are relative paths, for GitHub and a checkout)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"^[a-z]+:", link)]
    assert len(local) >= 10, local
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), f"README links to a missing {path}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            assert anchor in {github_slug(h) for h in headings}, f"no #{anchor} in {path}"


def test_readme_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    commands = [b.code.strip() for b in blocks("README.md") if b.lang == "bash"]
    assert commands.count("./scripts/run") == 1
    assert commands.count("./scripts/test") == 1
    assert "./scripts/test" in (ROOT / ".ci/run").read_text(encoding="utf-8")
