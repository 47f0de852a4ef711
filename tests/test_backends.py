"""Tests of the chat backends: the demo backend, and the OpenAI backend against a real
(fake) OpenAI-compatible server on loopback. Real sockets and the real httpx client;
nothing is mocked. Timeouts in here only guard against hangs, they measure nothing."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # so `tests.fake_openai` imports under any pytest import mode
    sys.path.insert(0, str(ROOT))

from flask_sse_stream.chat.backends import (  # noqa: E402
    BackendError,
    ChatBackend,
    DemoBackend,
    OpenAIBackend,
    Usage,
)
from tests.fake_openai import MIDSTREAM_ERROR_MESSAGE, FakeOpenAI  # noqa: E402

HANG_GUARD = 20.0  # seconds: far above any expected duration, only catches hangs


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def split(items: Sequence[Any]) -> tuple[list[str], list[Usage]]:
    texts = [p for p in items if isinstance(p, str)]
    usages = [p for p in items if isinstance(p, Usage)]
    return texts, usages


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(delay=0.0) as server:
        yield server


@pytest.fixture
def backend(fake: FakeOpenAI) -> Iterator[OpenAIBackend]:
    b = OpenAIBackend(base_url=fake.base_url, api_key="sk-test-0123456789abcdef", model="fake-1")
    yield b
    b.close()


def consume(
    backend: OpenAIBackend, messages: list[dict[str, str]]
) -> tuple[list[str], BackendError]:
    """Iterate until the backend raises; return the pieces seen before and the error."""
    seen: list[str] = []
    with pytest.raises(BackendError) as info:
        for piece in backend.stream(messages):
            if isinstance(piece, str):
                seen.append(piece)
    return seen, info.value


# ---------------------------------------------------------------------------------------
# Usage / protocol
# ---------------------------------------------------------------------------------------


def test_usage_as_dict_and_frozen() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8)
    assert usage.as_dict() == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert Usage().as_dict() == {
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        usage.prompt_tokens = 1  # type: ignore[misc]


def test_backends_satisfy_protocol(fake: FakeOpenAI) -> None:
    assert isinstance(DemoBackend(), ChatBackend)
    assert isinstance(OpenAIBackend(base_url=fake.base_url), ChatBackend)


# ---------------------------------------------------------------------------------------
# DemoBackend
# ---------------------------------------------------------------------------------------


def test_demo_stream_joins_to_reply_and_ends_with_usage() -> None:
    messages = user("How do server-sent events work?")
    items = list(DemoBackend(delay=0).stream(messages))
    texts, usages = split(items)
    assert "".join(texts) == DemoBackend.reply_for(messages)
    assert len(texts) >= 20
    assert all(p.strip() for p in texts)  # every piece holds a word
    assert isinstance(items[-1], Usage) and usages == [items[-1]]
    assert items[-1].completion_tokens == len(texts)
    assert items[-1].total_tokens == (items[-1].prompt_tokens or 0) + len(texts)


def test_demo_is_deterministic_and_prompt_dependent() -> None:
    a = DemoBackend.reply_for(user("tell me about gevent"))
    b = DemoBackend.reply_for(user("tell me about redis streams"))
    assert a != b
    assert "tell me about gevent" in a and "tell me about redis streams" in b
    first, _ = split(list(DemoBackend(delay=0).stream(user("same prompt"))))
    second, _ = split(list(DemoBackend(delay=0).stream(user("same prompt"))))
    assert first == second
    assert "".join(first).encode() == DemoBackend.reply_for(user("same prompt")).encode()


def test_demo_reply_shape() -> None:
    reply = DemoBackend.reply_for(user("hello"))
    assert 40 <= len(reply.split()) <= 80
    assert "\n\n" in reply
    assert any(ord(ch) > 127 for ch in reply)
    reply.encode("utf-8")  # no lone surrogates


def test_demo_uses_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    reply = DemoBackend.reply_for(messages)
    assert "second question" in reply
    assert "first question" not in reply and "first answer" not in reply


def test_demo_handles_empty_and_long_prompts() -> None:
    for messages in ([], user(""), user("   ")):
        texts, _ = split(list(DemoBackend(delay=0).stream(messages)))
        assert "".join(texts) == DemoBackend.reply_for(messages)
        assert texts
    long_reply = DemoBackend.reply_for(user("word " * 1000))
    assert len(long_reply) < 1000


def test_demo_sleeps_delay_before_each_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    # Looked up as time.sleep at call time, which is what gevent's monkey-patching replaces.
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    texts, _ = split(list(DemoBackend(delay=0.25).stream(user("hi"))))
    assert calls == [0.25] * len(texts)


def test_demo_rejects_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay"):
        DemoBackend(delay=-1)


def test_demo_can_be_closed_midway() -> None:
    gen = DemoBackend(delay=0).stream(user("stop me"))
    assert isinstance(next(gen), str)
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_demo_pieces_rebuild_reply_for_any_prompt(prompt: str) -> None:
    messages = user(prompt)
    items = list(DemoBackend(delay=0).stream(messages))
    texts, usages = split(items)
    assert "".join(texts) == DemoBackend.reply_for(messages)
    assert len(usages) == 1
    assert all(p.strip() for p in texts)
    assert " ".join(prompt.split())[:100] in DemoBackend.reply_for(messages)


# ---------------------------------------------------------------------------------------
# OpenAIBackend against the fake server: success
# ---------------------------------------------------------------------------------------


def test_openai_streams_exact_text_and_usage(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    items = list(backend.stream(user("hello there")))
    texts, usages = split(items)
    assert "".join(texts) == "".join(fake.pieces)
    assert texts == fake.pieces  # one piece per chunk, nothing merged or dropped
    assert "café" in "".join(texts) and "—" in "".join(texts)
    n = len(fake.pieces)
    assert items[-1] == Usage(prompt_tokens=2, completion_tokens=n, total_tokens=2 + n)
    assert usages == [items[-1]]


def test_openai_request_shape(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "ping"},
    ]
    list(backend.stream(messages))
    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test-0123456789abcdef"
    assert request.body["model"] == "fake-1"
    assert request.body["messages"] == messages
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert "max_tokens" not in request.body and "temperature" not in request.body


def test_openai_forwards_generation_options(fake: FakeOpenAI) -> None:
    b = OpenAIBackend(base_url=fake.base_url, model="m", max_tokens=64, temperature=0.2)
    list(b.stream(user("x")))
    body = fake.requests[0].body
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.2


def test_openai_api_key_from_env_or_placeholder(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-42424242")
    list(OpenAIBackend(base_url=fake.base_url).stream(user("a")))
    monkeypatch.delenv("OPENAI_API_KEY")
    list(OpenAIBackend(base_url=fake.base_url).stream(user("b")))
    assert fake.requests[0].headers["authorization"] == "Bearer sk-from-env-42424242"
    assert fake.requests[1].headers["authorization"] == "Bearer not-needed"


def test_openai_reuses_the_client_across_streams(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    for i in range(3):
        texts, _ = split(list(backend.stream(user(f"n{i}"))))
        assert "".join(texts) == "".join(fake.pieces)
    assert len(fake.requests) == 3
    assert fake.wait_completed(3, timeout=HANG_GUARD)


def test_openai_request_is_lazy(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    gen = backend.stream(user("never sent"))
    gen.close()
    list(backend.stream(user("sent")))  # a request after it proves the server is reachable
    assert [r.body["messages"][0]["content"] for r in fake.requests] == ["sent"]


# ---------------------------------------------------------------------------------------
# OpenAIBackend: failures become BackendError
# ---------------------------------------------------------------------------------------


def test_openai_error_midstream(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.mode = "error_midstream"
    seen, error = consume(backend, user("x"))
    assert seen == fake.pieces[: fake.fail_after]
    assert MIDSTREAM_ERROR_MESSAGE in str(error)


def test_openai_connection_dropped_midstream(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.mode = "drop"
    seen, error = consume(backend, user("x"))
    assert seen == fake.pieces[: fake.fail_after]
    assert "lost" in str(error)


def test_openai_stream_ending_without_finish_reason(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    # Connection-close delimited body: the truncation is invisible to HTTP.
    fake.mode = "drop_eof"
    seen, error = consume(backend, user("x"))
    assert seen == fake.pieces[: fake.fail_after]
    assert "mid-reply" in str(error)


def test_openai_garbage(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.mode = "garbage"
    seen, error = consume(backend, user("x"))
    assert seen == fake.pieces[:1]
    assert "malformed" in str(error)


@pytest.mark.parametrize(("status", "attempts"), [(500, 3), (401, 1), (429, 3), (404, 1)])
def test_openai_http_status_errors(
    fake: FakeOpenAI, backend: OpenAIBackend, status: int, attempts: int
) -> None:
    fake.mode = f"status_{status}"
    fake.retry_after = "0"  # retried at once: the retry tests check the waits
    seen, error = consume(backend, user("x"))
    assert seen == []
    assert error.status_code == status
    assert str(status) in str(error)
    assert len(fake.requests) == attempts  # 5xx and 429 are retried (max_retries=2), not 4xx


def test_openai_error_messages_hide_the_api_key(fake: FakeOpenAI) -> None:
    fake.mode = "status_401"
    secret = "sk-proj-SECRETSECRET-0123456789"
    b = OpenAIBackend(base_url=fake.base_url, api_key=secret)
    _, error = consume(b, user("x"))
    assert "Incorrect API key" in str(error)
    assert "SECRET" not in str(error) and "0123456789" not in str(error)
    assert "Traceback" not in str(error)


def test_openai_per_request_mode_via_message(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.retry_after = "0"  # the 500 is retried at once
    _, error = consume(backend, user("mode:status_500 please fail"))
    assert error.status_code == 500
    texts, _ = split(list(backend.stream(user("fine"))))
    assert "".join(texts) == "".join(fake.pieces)


def test_openai_unreachable_server() -> None:
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{closed_port()}/v1", connect_timeout=2,
                      max_retries=0)  # retries: tests/test_backend_upstream.py
    started = time.monotonic()
    seen, error = consume(b, user("x"))
    assert seen == []
    assert "could not connect" in str(error)
    assert time.monotonic() - started < HANG_GUARD


@pytest.mark.parametrize("mode", ["hang", "hang_before_headers"])
def test_openai_hanging_server_times_out(fake: FakeOpenAI, mode: str) -> None:
    fake.mode = mode
    b = OpenAIBackend(base_url=fake.base_url, timeout=0.5)
    started = time.monotonic()
    seen, error = consume(b, user("x"))
    assert seen == []
    assert "timeout" in str(error)
    assert time.monotonic() - started < HANG_GUARD
    # and the fake sees the client give up on the hung request
    assert fake.wait_closed(timeout=HANG_GUARD)


def test_openai_generator_exit_is_not_swallowed(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.mode = "slow"
    gen = backend.stream(user("x"))
    next(gen)
    with pytest.raises(GeneratorExit):
        gen.throw(GeneratorExit)


# ---------------------------------------------------------------------------------------
# Cancellation closes the upstream connection
# ---------------------------------------------------------------------------------------


def test_openai_close_midstream_closes_upstream(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.mode = "slow"
    gen = backend.stream(user("a long story"))
    assert next(gen) == "tok0 "
    assert next(gen) == "tok1 "
    assert fake.open_streams == 1
    gen.close()
    assert fake.wait_closed(timeout=2.0), "the fake still streams after gen.close()"
    assert fake.closed_by_client == 1
    with pytest.raises(StopIteration):
        next(gen)


def test_completed_stream_is_not_counted_as_cancelled(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    gen = backend.stream(user("x"))
    list(gen)
    gen.close()
    assert fake.wait_completed(1, timeout=HANG_GUARD)
    # once a stream is complete the fake never counts it as cancelled, so this is final
    assert fake.closed_by_client == 0


_GEVENT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import sys

    import gevent
    import gevent.event
    import gevent.socket

    from flask_sse_stream.chat.backends import OpenAIBackend

    base_url, mode = sys.argv[1], sys.argv[2]
    backend = OpenAIBackend(base_url=base_url, api_key="sk-gevent", timeout=60)
    seen = []


    def run():
        for piece in backend.stream([{"role": "user", "content": "mode:" + mode}]):
            seen.append(piece)
            if len(seen) == 2:
                print("GOT 2", flush=True)


    greenlet = gevent.spawn(run)
    gevent.socket.wait_read(sys.stdin.fileno())  # the test says when to kill
    assert sys.stdin.readline().strip() == "kill"
    greenlet.kill(block=True, timeout=10)
    print("KILLED", greenlet.dead, type(greenlet.value).__name__, len(seen), flush=True)
    """
)


@pytest.mark.slow  # a subprocess
@pytest.mark.parametrize("mode", ["slow", "hang", "hang_before_headers"])
def test_openai_greenlet_kill_closes_upstream(fake: FakeOpenAI, mode: str) -> None:
    """GreenletExit raised while the backend blocks on the socket closes the upstream.

    Runs in a subprocess because gevent must monkey-patch before anything imports socket.
    """
    fake.delay = 0.05
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _GEVENT_SCRIPT, fake.base_url, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if mode == "slow":
            line = proc.stdout.readline()
            assert line.strip() == "GOT 2", proc.stderr.read() if proc.stderr else line
        else:
            assert fake.wait_streams(1, timeout=HANG_GUARD)
        assert fake.closed_by_client == 0
        proc.stdin.write("kill\n")
        proc.stdin.flush()
        assert fake.wait_closed(timeout=5.0), "the fake still streams after greenlet.kill()"
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, err
        assert "KILLED True GreenletExit" in out, (out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------
# httpx (the openai extra) is optional
# ---------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess
def test_module_imports_without_httpx() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["httpx"] = None  # makes `import httpx` raise ImportError
        from flask_sse_stream.chat.backends import DemoBackend, OpenAIBackend
        assert "".join(p for p in DemoBackend(delay=0).stream([]) if isinstance(p, str))
        try:
            OpenAIBackend()
        except RuntimeError as exc:
            assert "pip install 'flask-sse-stream[openai]'" in str(exc), exc
            print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


# ---------------------------------------------------------------------------------------
# The fake server itself (CLI)
# ---------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess
def test_fake_openai_runs_as_a_module() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--port", "0", "--text", "Bonjour à tous"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("FAKE_OPENAI_READY http://127.0.0.1:"), line
        base_url = line.split()[1]
        texts, _ = split(list(OpenAIBackend(base_url=base_url).stream(user("hi"))))
        assert "".join(texts) == "Bonjour à tous"
    finally:
        proc.terminate()
        proc.wait(timeout=HANG_GUARD)
    assert proc.returncode == 0
