"""The upstream read of OpenAIBackend against a fake server on loopback: retries before the
first byte (and never after it), headers, safe errors, cancellation, the connection pool,
and the reader's chunk fast path against the project's SSE parser.

Retry waits are recorded instead of slept (``time.sleep`` is looked up at call time, as
gevent needs), so the tests check the exact waits and stay fast."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_sse_stream.chat import BackendError, Finish, OpenAIBackend
from flask_sse_stream.chat.backends.upstream import Upstream
from flask_sse_stream.wire.parse import parse_events
from tests.fake_openai import DEFAULT_PIECES, FakeOpenAI

HANG_GUARD = 20.0
REPLY = "".join(DEFAULT_PIECES)


def user(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(delay=0.0) as server:
        yield server


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry waits, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


def reply(backend: OpenAIBackend, text: str = "hi") -> str:
    return "".join(p for p in backend.stream(user(text)) if isinstance(p, str))


def make(fake: FakeOpenAI, **kwargs: Any) -> OpenAIBackend:
    return OpenAIBackend(base_url=fake.base_url, api_key="sk-test-0123456789", **kwargs)


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize(("retry_after", "wait"), [
    ("2", 2.0),
    ("0.25", 0.25),
    ("0", 0.0),
])
def test_429_is_retried_after_its_retry_after(fake: FakeOpenAI, sleeps: list[float],
                                              retry_after: str, wait: float) -> None:
    fake.mode, fake.retry_after = "retry_429", retry_after
    assert reply(make(fake)) == REPLY
    assert sleeps == [wait]
    assert len(fake.requests) == 2


def test_retry_after_as_an_http_date(fake: FakeOpenAI, sleeps: list[float]) -> None:
    fake.mode = "retry_429"
    fake.retry_after = formatdate(time.time() + 10, usegmt=True)
    assert reply(make(fake)) == REPLY
    assert len(sleeps) == 1 and 8.0 <= sleeps[0] <= 10.0


def test_a_retry_after_beyond_the_cap_is_reported_at_once(fake: FakeOpenAI,
                                                         sleeps: list[float]) -> None:
    fake.mode, fake.retry_after = "retry_429", "3600"
    with pytest.raises(BackendError) as info:
        reply(make(fake))
    assert info.value.status_code == 429 and "Rate limit reached" in str(info.value)
    assert sleeps == [] and len(fake.requests) == 1


def test_503_is_retried_with_backoff_until_it_recovers(fake: FakeOpenAI,
                                                      sleeps: list[float]) -> None:
    fake.mode, fake.fail_times = "retry_503", 2
    assert reply(make(fake)) == REPLY
    assert len(fake.requests) == 3
    first, second = sleeps
    assert 0.375 <= first <= 0.5 and 0.75 <= second <= 1.0  # 0.5 s doubled, jittered down


def test_retries_are_bounded(fake: FakeOpenAI, sleeps: list[float]) -> None:
    fake.mode, fake.fail_times = "retry_503", 10
    with pytest.raises(BackendError) as info:
        reply(make(fake, max_retries=3))
    assert info.value.status_code == 503
    assert len(fake.requests) == 4 and len(sleeps) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_not_retried(fake: FakeOpenAI, sleeps: list[float],
                                       status: int) -> None:
    fake.mode = f"retry_{status}"
    with pytest.raises(BackendError) as info:
        reply(make(fake))
    assert info.value.status_code == status
    assert len(fake.requests) == 1 and sleeps == []


def test_connection_refused_is_retried(sleeps: list[float],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    servers: list[FakeOpenAI] = []

    def server_comes_up(wait: float) -> None:  # the first retry wait: the server starts
        sleeps.append(wait)
        if not servers:
            servers.append(FakeOpenAI(port=port))

    monkeypatch.setattr(time, "sleep", server_comes_up)
    try:
        backend = OpenAIBackend(base_url=f"http://127.0.0.1:{port}/v1")
        assert reply(backend) == REPLY
        assert len(sleeps) == 1 and len(servers[0].requests) == 1
    finally:
        for server in servers:
            server.stop()


def test_connection_refused_retries_run_out(sleeps: list[float]) -> None:
    backend = OpenAIBackend(base_url=f"http://user:hunter2@127.0.0.1:{closed_port()}/v1")
    with pytest.raises(BackendError, match="could not connect") as info:
        reply(backend)
    assert len(sleeps) == 2
    assert "hunter2" not in str(info.value) and "127.0.0.1" not in str(info.value)


def test_a_reset_after_the_first_byte_is_not_retried(fake: FakeOpenAI,
                                                    sleeps: list[float]) -> None:
    fake.mode = "reset"
    seen: list[str] = []
    with pytest.raises(BackendError, match="lost mid-reply"):
        for piece in make(fake).stream(user()):
            if isinstance(piece, str):
                seen.append(piece)
    assert seen == DEFAULT_PIECES[:1]
    assert len(fake.requests) == 1 and sleeps == []


def test_a_read_timeout_before_the_headers_is_not_retried(fake: FakeOpenAI,
                                                         sleeps: list[float]) -> None:
    fake.mode = "hang_before_headers"
    with pytest.raises(BackendError, match="timeout"):
        reply(make(fake, timeout=0.3))
    assert len(fake.requests) == 1 and sleeps == []


# --------------------------------------------------------------------------- requests


def test_organization_project_and_default_headers(fake: FakeOpenAI,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    reply(make(fake, organization="org-1", project="proj-1",
               default_headers={"X-Fake-Mode": "ok", "X-Team": "blue"}))
    headers = fake.requests[0].headers
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj-1"
    assert headers["x-team"] == "blue"
    assert headers["authorization"] == "Bearer sk-test-0123456789"
    assert headers["accept-encoding"] == "identity"
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-env")
    reply(make(fake))
    assert fake.requests[1].headers["openai-organization"] == "org-env"
    assert fake.requests[1].headers["openai-project"] == "proj-env"


def test_extra_body_reaches_the_request(fake: FakeOpenAI) -> None:
    reply(make(fake, extra_body={"reasoning_effort": "low", "top_p": 0.5}))
    assert fake.requests[0].body["reasoning_effort"] == "low"
    assert fake.requests[0].body["top_p"] == 0.5


def test_an_httpx_client_of_ones_own_is_used_and_left_open(fake: FakeOpenAI) -> None:
    seen: list[str] = []
    with httpx.Client(event_hooks={"request": [lambda r: seen.append(r.url.path)]}) as client:
        backend = make(fake, client=client)
        assert backend.client is client
        assert reply(backend) == REPLY
        backend.close()
        assert not client.is_closed
    assert seen == ["/v1/chat/completions"]


def test_an_openai_sdk_client_is_refused_clearly(fake: FakeOpenAI) -> None:
    openai = pytest.importorskip("openai")
    with pytest.raises(TypeError, match=r"takes an httpx\.Client now"):
        make(fake, client=openai.OpenAI(base_url=fake.base_url, api_key="sk-x"))
    with pytest.raises(TypeError, match=r"must be an httpx\.Client"):
        make(fake, client=object())


def test_bad_constructor_arguments() -> None:
    bad: list[dict[str, Any]] = [{"max_steps": 0}, {"tool_timeout": 0}, {"max_retries": -1},
                                 {"max_connections": 0}]
    for kwargs in bad:
        with pytest.raises(ValueError):
            OpenAIBackend(base_url="http://127.0.0.1:1/v1", **kwargs)

    def f() -> None: ...

    with pytest.raises(ValueError, match="share a name"):
        OpenAIBackend(base_url="http://127.0.0.1:1/v1", tools=[f, f])


def test_a_base_url_that_is_not_http_is_a_safe_error(sleeps: list[float]) -> None:
    with pytest.raises(BackendError, match="not a valid http"):
        reply(OpenAIBackend(base_url="ftp://secret@example.invalid/v1"))
    assert sleeps == []


# --------------------------------------------------------------------------- cancel, pool


def test_close_midstream_closes_the_upstream_socket_within_a_second(fake: FakeOpenAI) -> None:
    fake.mode = "slow"
    stream = make(fake).stream(user())
    assert next(stream) == "tok0 "
    stream.close()
    assert fake.wait_closed(timeout=1.0)


def test_more_concurrent_replies_than_httpx_default_pool(fake: FakeOpenAI) -> None:
    """150 replies at once through one backend: httpx's default pool (100) would hold the
    last 50 back until others end; these all stream at the same time."""
    fake.mode = "hold"
    backend = make(fake)
    count = 150
    results: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        text = reply(backend)
        with lock:
            results.append(text)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        assert fake.wait_streams(count, timeout=HANG_GUARD), fake.open_streams
    finally:
        fake.release()
    for thread in threads:
        thread.join(HANG_GUARD)
    assert results == [REPLY] * count


# --------------------------------------------------------------------------- the reader

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """An event stream of JSON data in every legal shape, cut anywhere into chunks."""
    events = []
    for value in draw(st.lists(VALUES, max_size=6)):
        multiline = draw(st.booleans())  # data over several lines: JSON allows it
        text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=1 if multiline else None)
        end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        lines = []
        if draw(st.booleans()):
            lines.append(": a comment")
        if draw(st.booleans()):
            lines.append("event: chunk")
        lines += [f"data: {line}" for line in text.split("\n")]
        events.append(end.join(lines) + end + end)
    if draw(st.booleans()):
        events.append("data: [DONE]\n\n")
        events.append('data: {"after": "done"}\n\n')
    raw = "".join(events).encode("utf-8")
    if draw(st.booleans()):  # one event per chunk, as servers send them: the fast path
        return raw, [event.encode("utf-8") for event in events]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(raw) - 1, 1)), max_size=8))))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return raw, [piece for piece in pieces if piece]


@pytest.fixture(scope="module")
def raw_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(mode="raw") as server:
        yield server


@pytest.fixture(scope="module")
def reader(raw_fake: FakeOpenAI) -> Iterator[Upstream]:
    reader = Upstream(base_url=raw_fake.base_url, api_key=None)
    yield reader
    reader.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(bodies())
def test_the_reader_returns_what_the_sse_parser_reads(raw_fake: FakeOpenAI, reader: Upstream,
                                                      body: tuple[bytes, list[bytes]]) -> None:
    raw, chunks = body
    raw_fake.raw_chunks = chunks
    expected = []
    for event in parse_events(raw):
        if event.data == "[DONE]":
            break
        expected.append(json.loads(event.data))
    assert list(reader.chunks(b'{"messages": [], "stream": true}')) == expected


def test_stream_without_finish_reason_is_an_error_even_after_done(fake: FakeOpenAI) -> None:
    fake.mode = "raw"
    fake.raw_chunks = [b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n',
                       b"data: [DONE]\n\n"]
    items: list[Any] = []
    with pytest.raises(BackendError, match="ended mid-reply"):
        items.extend(make(fake).stream(user()))
    fake.raw_chunks.insert(1, b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n')
    assert list(make(fake).stream(user())) == ["a", Finish("stop")]
