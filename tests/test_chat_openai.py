"""The example app with the OpenAI-compatible backend, against a fake model server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.chat import partial_chat, run_chat
from tests.fake_openai import DEFAULT_PIECES, FakeOpenAI
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(delay=0.01) as server:
        yield server


@pytest.fixture(scope="module")
def app_server(fake: FakeOpenAI) -> Iterator[Server]:
    env = {"FLASK_CHAT_BACKEND": "openai", "FLASK_OPENAI_BASE_URL": fake.base_url,
           "FLASK_OPENAI_API_KEY": "sk-test-123", "FLASK_OPENAI_MODEL": "fake-model",
           "FLASK_CHAT_GRACE_SECONDS": "0.5", "FLASK_SSE_HEARTBEAT_INTERVAL": "0.5"}
    with gunicorn_server(env=env) as server:
        yield server


def test_reply_is_streamed_exactly_and_the_request_is_well_formed(app_server: Server,
                                                                   fake: FakeOpenAI) -> None:
    before = len(fake.requests)
    result = run_chat(app_server, "POST", "hello model")
    assert result.text == "".join(DEFAULT_PIECES)
    assert result.close["finish_reason"] == "stop"
    assert result.close["usage"]["total_tokens"] > 0
    request = fake.requests[before]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test-123"
    assert request.body["model"] == "fake-model"
    assert request.body["stream"] is True
    assert request.body["messages"] == [{"role": "user", "content": "hello model"}]


@pytest.mark.parametrize("mode", ["error_midstream", "drop", "garbage", "status_500",
                                  "status_401"])
def test_upstream_failures_end_with_a_close_error(app_server: Server, mode: str) -> None:
    result = run_chat(app_server, "GET", f"mode:{mode} please")
    close = result.close
    assert close["finish_reason"] == "error"
    assert close["error"] and "sk-test" not in close["error"]
    assert all(e.type in ("message", "close") for e in result.events)  # never "error"


def test_unreachable_upstream_is_an_error_not_a_hang() -> None:
    from tests.servers import free_port

    env = {"FLASK_CHAT_BACKEND": "openai",
           "FLASK_OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}
    with gunicorn_server(env=env) as server:
        result = run_chat(server, "GET", "anyone there?")
    assert result.close["finish_reason"] == "error"
    assert "connect" in result.close["error"]


@pytest.mark.parametrize("mode", ["slow", "hang"])
def test_delete_closes_the_upstream_request(app_server: Server, fake: FakeOpenAI,
                                            mode: str) -> None:
    closed_before = fake.closed_by_client
    with open_stream(app_server.url + f"/chat/stream?message=mode:{mode}+go") as resp:
        stream_id = resp.headers["x-stream-id"]
        if mode == "slow":
            body = b""
            while not parse(body).events:
                body += resp.read_chunk()
        else:
            assert fake.wait_streams(1, timeout=10)  # upstream request under way, silent
        assert httpx.delete(f"{app_server.url}/chat/stream/{stream_id}").status_code == 204
        body = resp.read_all()
    assert b'"finish_reason":"cancelled"' in body
    assert fake.wait_closed(timeout=5, count=closed_before + 1)


def test_client_gone_past_the_grace_period_cancels_upstream(app_server: Server,
                                                            fake: FakeOpenAI) -> None:
    closed_before = fake.closed_by_client
    first = partial_chat(app_server, "GET", "mode:slow abandon me", count=2)
    # nobody resumes: after the 0.5 s grace period the generation and its request end
    assert fake.wait_closed(timeout=10, count=closed_before + 1)
    rest = run_chat(app_server, "GET", "mode:slow abandon me",
                    headers={"Last-Event-ID": first.events[-1].last_event_id})
    assert rest.close["finish_reason"] == "cancelled"
