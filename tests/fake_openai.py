"""A fake OpenAI-compatible chat server on loopback, for tests that need a real socket.

The one upstream the test suite cannot run for real is a model server, so this module
plays one: a real HTTP/1.1 server (stdlib ``ThreadingHTTPServer``, one daemon thread per
connection) that answers ``POST /v1/chat/completions`` the way OpenAI does, including its
failure modes. Nothing is mocked on the client side: the ``openai`` SDK, httpx and the
sockets all run for real.

Use it in-process::

    with FakeOpenAI(pieces=["Hello", " world"], delay=0.01) as fake:
        backend = OpenAIBackend(base_url=fake.base_url, api_key="sk-test")
        ...
        fake.requests[0].body["model"]        # what the client sent
        fake.wait_closed(timeout=2)           # did the client hang up on a stream?

or as a process (e.g. for a gunicorn-based test)::

    python -m tests.fake_openai --port 8089 --mode slow --delay 0.05

which prints ``FAKE_OPENAI_READY http://127.0.0.1:8089/v1`` once it listens and serves
until SIGTERM/SIGINT.

Modes (``FakeOpenAI(mode=...)`` for the whole server, or per request with the header
``X-Fake-Mode: <mode>``, or by starting the last user message with ``mode:<mode>``, e.g.
``"mode:drop tell me a story"``, which works through any client, including a browser
talking to the chat blueprint):

``ok``
    role chunk, one chunk per piece (``delay`` seconds apart), a ``finish_reason: "stop"``
    chunk, a usage chunk (``choices: []``) when ``stream_options.include_usage`` is set,
    then ``data: [DONE]``.
``slow``
    like ``ok`` with ``slow_pieces`` pieces (default 400) at least 0.05 s apart: a stream
    long enough to cancel.
``length``, ``content_filter``
    like ``ok``, but the last chunk's ``finish_reason`` is ``"length"`` (the reply was
    cut at the token limit) or ``"content_filter"``.
``error_midstream``
    ``fail_after`` pieces, then ``data: {"error": {"message": ..., "type": "server_error"}}``
    and ``[DONE]`` (what vLLM and OpenAI send when generation fails after the 200).
``drop``
    ``fail_after`` pieces, then the socket is closed abruptly, mid chunked body.
``drop_eof``
    the response is not chunked but ``Connection: close``-delimited; ``fail_after`` pieces,
    then a clean EOF: the body looks complete to HTTP but has no ``finish_reason``.
``garbage``
    one valid piece, then ``data:`` lines that are not JSON, then ``[DONE]``.
``hang``
    200 and the ``text/event-stream`` headers, then nothing until the client goes away.
``hang_before_headers``
    reads the request and sends nothing at all until the client goes away.
``status_<code>``
    e.g. ``status_500``, ``status_401``, ``status_429``: that status with an OpenAI-style
    JSON error body (``{"error": {"message", "type", "param", "code"}}``), and a
    ``Retry-After: <retry_after>`` header when ``retry_after`` is set.
``retry_<code>``
    the first ``fail_times`` requests in this mode get ``status_<code>``, later ones
    ``ok``: a server that recovers, for retries.
``reset``
    the first piece, then a TCP reset (``SO_LINGER`` 0): a failure after the first byte.
``hold``
    the first piece, then nothing until :meth:`FakeOpenAI.release` (or the client goes
    away), then the rest: many streams open at once.
``raw``
    the bytes of ``raw_chunks`` as they are, one HTTP chunk each: any body, any split.
``reasoning_content``, ``reasoning``
    ``reasoning_pieces`` as ``delta.reasoning_content`` (DeepSeek, LiteLLM) or
    ``delta.reasoning`` (vLLM, Ollama), then the pieces as ``delta.content``.
``reasoning_only``
    only ``delta.reasoning`` pieces, then ``finish_reason: "stop"``: a reply that is all
    thinking.
``tool_call``, ``tool_calls``
    the first (``tool_call``) or the first two (``tool_calls``) of ``tool_calls``
    (``[{"name", "arguments"}]``) as ``delta.tool_calls`` fragments: the id and name
    first, the JSON arguments in pieces of ``argument_chunk`` characters, two calls'
    fragments interleaved by ``index``; ``finish_reason: "tool_calls"``. A request whose
    last message is a ``tool`` message gets text instead: ``"The tool said: "`` and the
    tool messages' contents.
``tools_forever``
    a tool call whatever the messages: a model that never stops calling tools.

Streams detect a client that hangs up promptly: between chunks the handler waits on the
socket with ``select`` (EOF wakes it at once), and a failed write counts too. Every such
hang-up is counted in ``closed_by_client`` and wakes :meth:`FakeOpenAI.wait_closed`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import select
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

try:
    from .fake_openai_parts import (
        DEFAULT_REASONING,
        DEFAULT_TOOL_CALLS,
        PARTS_MODES,
        PartsModes,
    )
except ImportError:  # run as a script: python tests/fake_openai.py
    from fake_openai_parts import (  # type: ignore[no-redef]
        DEFAULT_REASONING,
        DEFAULT_TOOL_CALLS,
        PARTS_MODES,
        PartsModes,
    )

DEFAULT_PIECES = ["Hello", " from", " the", " fake", " OpenAI", " server", " — ", "café", "!"]

MODES = (
    "ok",
    "slow",
    "length",
    "content_filter",
    "error_midstream",
    "drop",
    "drop_eof",
    "garbage",
    "hang",
    "hang_before_headers",
    "status_<code>",
    "retry_<code>",
    "reset",
    "hold",
    "raw",
    *PARTS_MODES,
)

MIDSTREAM_ERROR_MESSAGE = "The model crashed while generating (fake error)"

_POLL = 0.05  # seconds between checks for stop() while waiting on a socket


class ClientGone(Exception):
    """The client closed the connection while the handler was streaming to it."""


@dataclass
class RecordedRequest:
    """One request the fake received. ``headers`` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = b""
    mode: str = "ok"


@dataclass
class _Stats:
    open_streams: int = 0
    closed_by_client: int = 0
    completed: int = 0
    accepted: int = 0
    connections: set[socket.socket] = field(default_factory=set)


def split_words(text: str) -> list[str]:
    """Split ``text`` into word-plus-following-whitespace pieces that join back to it."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # a thousand clients may connect at once
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client resetting an idle keep-alive connection is normal, not worth a traceback.
        if isinstance(sys.exc_info()[1], OSError) and not self.fake.verbose:
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(PartsModes, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    _chunked = True
    server: _Server

    # -- plumbing ---------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # as model servers do: without it each small write after the first waits for the
        # client's delayed ACK (40 ms)
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.fake._cond:
            self.server.fake._stats.connections.add(self.connection)
            self.server.fake._stats.accepted += 1

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.fake._cond:
            self.server.fake._stats.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            super().log_message(format, *args)

    @property
    def fake(self) -> FakeOpenAI:
        return self.server.fake

    def _peer_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the client to hang up; True if it did.

        Data from the client (it should send none while we stream) is left alone and
        only checked again after a short sleep.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if self.fake._stopping.is_set():
                raise ClientGone("server stopping")
            wait = max(0.0, min(remaining, _POLL))
            try:
                readable, _, errored = select.select([self.connection], [], [self.connection], wait)
            except (OSError, ValueError):
                return True
            if readable or errored:
                try:
                    data = self.connection.recv(1, socket.MSG_PEEK)
                except BlockingIOError:
                    data = b"?"
                except OSError:
                    return True
                if not data:
                    return True
                time.sleep(min(_POLL, max(remaining, 0.0)))  # unexpected client bytes
            if remaining <= 0:
                return False

    def _check_alive(self, wait: float = 0.0) -> None:
        if self._peer_closed(wait):
            raise ClientGone

    def _write(self, data: bytes) -> None:
        self._check_alive()
        try:
            self.connection.sendall(data)
        except OSError as exc:
            raise ClientGone from exc

    def _send_chunk(self, payload: bytes) -> None:
        """One HTTP/1.1 chunk (or raw bytes when the response is not chunked)."""
        if self._chunked:
            self._write(b"%x\r\n%s\r\n" % (len(payload), payload))
        else:
            self._write(payload)

    def _send_event(self, data: str | dict[str, Any]) -> None:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        self._send_chunk(f"data: {text}\n\n".encode())

    def _send_json(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status >= 400 and self.fake.retry_after is not None:
            self.send_header("Retry-After", self.fake.retry_after)
        self.end_headers()
        self.wfile.write(payload)

    # -- routes -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(b"", None)
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(
                200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
            )
        else:
            self._send_json(404, _error_body(f"no route {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        mode = self._mode_for(body)
        self._record(raw, body, mode)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, _error_body(f"no route {self.path}", "invalid_request_error"))
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_json(400, _error_body("body must be JSON with messages", "invalid_request"))
            return
        status = re.fullmatch(r"status_(\d{3})", mode)
        if status:
            self._send_status_error(int(status.group(1)))
            return
        retry = re.fullmatch(r"retry_(\d{3})", mode)
        if retry:
            with self.fake._cond:
                self.fake._failed += 1
                failing = self.fake._failed <= self.fake.fail_times
            if failing:
                self._send_status_error(int(retry.group(1)))
                return
            mode = "ok"
        if not body.get("stream"):
            self._send_completion(body)
            return
        self._stream(body, mode)

    def _mode_for(self, body: Any) -> str:
        mode = self.headers.get("X-Fake-Mode")
        if not mode and isinstance(body, dict):
            messages = body.get("messages")
            users = [
                m
                for m in (messages if isinstance(messages, list) else [])
                if isinstance(m, dict) and m.get("role") == "user"
            ]
            content = users[-1].get("content") if users else None
            if isinstance(content, str):
                match = re.match(r"\s*mode:(\w+)", content)
                mode = match.group(1) if match else None
        return mode or self.fake.mode

    def _record(self, raw: bytes, body: Any, mode: str | None = None) -> None:
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
            mode=mode or self.fake.mode,
        )
        with self.fake._cond:
            self.fake.requests.append(request)
            self.fake._cond.notify_all()

    def _send_status_error(self, status: int) -> None:
        if status == 401:
            auth = self.headers.get("Authorization", "")
            key = auth.removeprefix("Bearer ").strip()
            shown = f"{key[:5]}{'*' * max(len(key) - 9, 3)}{key[-4:]}" if len(key) > 9 else key
            body = _error_body(
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        elif status == 429:
            body = _error_body("Rate limit reached (fake)", "requests", code="rate_limit_exceeded")
        elif status >= 500:
            body = _error_body(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
            )
        else:
            body = _error_body(f"fake error {status}", "invalid_request_error")
        self._send_json(status, body)

    def _send_completion(self, body: dict[str, Any]) -> None:
        pieces = self.fake.pieces
        self._send_json(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(pieces)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage(body, pieces),
            },
        )

    # -- streaming --------------------------------------------------------------------

    def _stream(self, body: dict[str, Any], mode: str) -> None:
        fake = self.fake
        with fake._cond:
            fake._stream_seq += 1
            stream_id = f"chatcmpl-fake{fake._stream_seq}"
            fake._stats.open_streams += 1
            fake._cond.notify_all()
        try:
            self._stream_body(body, mode, stream_id)
        except ClientGone:
            if not fake._stopping.is_set():
                with fake._cond:
                    fake._stats.closed_by_client += 1
                    fake._cond.notify_all()
            self.close_connection = True
        finally:
            with fake._cond:
                fake._stats.open_streams -= 1
                fake._cond.notify_all()

    def _chunk(self, stream_id: str, model: Any, delta: dict[str, Any], finish: Any = None) -> Any:
        return {
            "id": stream_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _stream_body(self, body: dict[str, Any], mode: str, stream_id: str) -> None:
        fake = self.fake
        model = body.get("model")
        if mode == "hang_before_headers":
            while not self._peer_closed(3600):
                pass
            raise ClientGone

        self._chunked = mode != "drop_eof"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if self._chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()

        if mode == "hang":
            while not self._peer_closed(3600):
                pass
            raise ClientGone

        if mode == "raw":
            for payload in fake.raw_chunks:
                self._send_chunk(payload)
            self._end()
            return
        if mode in PARTS_MODES:
            self._send_event(self._chunk(stream_id, model, {"role": "assistant", "content": ""}))
            self._stream_parts(body, mode, stream_id)
            return
        pieces = list(fake.pieces)
        delay = fake.delay
        if mode == "slow":
            pieces = [f"tok{i} " for i in range(fake.slow_pieces)]
            delay = max(delay, 0.05)
        if mode in ("error_midstream", "drop", "drop_eof"):
            pieces = pieces[: fake.fail_after]

        self._send_event(self._chunk(stream_id, model, {"role": "assistant", "content": ""}))
        for i, piece in enumerate(pieces):
            if delay and i:
                self._check_alive(delay)
            self._send_event(self._chunk(stream_id, model, {"content": piece}))
            if mode == "reset" and i == 0:
                self._reset()
                return
            if mode == "hold" and i == 0:
                while not fake._released.wait(_POLL):
                    self._check_alive()
            if mode == "garbage":
                self._send_event("this is {not json")
                self._send_event("[DONE]")
                self._end()
                return

        if mode == "error_midstream":
            self._send_event(_error_body(MIDSTREAM_ERROR_MESSAGE, "server_error"))
            self._send_event("[DONE]")
            self._end()
            return
        if mode in ("drop", "drop_eof"):
            with fake._cond:
                fake._stats.completed += 1
                fake._cond.notify_all()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return

        finish = mode if mode in ("length", "content_filter") else "stop"
        self._finish_stream(body, stream_id, model, finish, pieces)

    def _finish_stream(self, body: dict[str, Any], stream_id: str, model: Any,
                       finish: str, pieces: list[str]) -> None:
        """The ``finish_reason`` chunk, the usage chunk if asked for, ``[DONE]``, the end."""
        self._send_event(self._chunk(stream_id, model, {}, finish=finish))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage_chunk = self._chunk(stream_id, model, {})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = _usage(body, pieces)
            self._send_event(usage_chunk)
        self._send_event("[DONE]")
        self._end()

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (the client reads ECONNRESET)."""
        with self.fake._cond:
            self.fake._stats.completed += 1
            self.fake._cond.notify_all()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()

    def _end(self) -> None:
        """Count the stream as complete, then end the chunked body.

        Clients may hang up as soon as they read ``[DONE]`` (the openai SDK does), so a
        failure to send the terminating chunk is not a cancellation.
        """
        with self.fake._cond:
            self.fake._stats.completed += 1
            self.fake._cond.notify_all()
        if self._chunked:
            with contextlib.suppress(ClientGone):
                self._write(b"0\r\n\r\n")


def _error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _usage(body: dict[str, Any], pieces: list[str]) -> dict[str, int]:
    prompt = sum(
        len(str(m.get("content", "")).split())
        for m in body.get("messages", [])
        if isinstance(m, dict)
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(pieces),
        "total_tokens": prompt + len(pieces),
    }


class FakeOpenAI:
    """A fake OpenAI-compatible server on ``127.0.0.1``, started on construction.

    ``pieces``: the reply's text pieces (``"".join(pieces)`` is the reply); ``delay``:
    seconds between pieces; ``mode``: the default mode (see the module docstring);
    ``fail_after``: pieces sent before ``error_midstream``/``drop``/``drop_eof`` fail;
    ``slow_pieces``: how many pieces ``slow`` sends; ``fail_times``: how many requests a
    ``retry_<code>`` mode fails; ``retry_after``: the ``Retry-After`` header of error
    answers (None: none); ``reasoning_pieces``, ``tool_calls`` (``[{"name",
    "arguments"}]``) and ``argument_chunk`` (characters per arguments fragment): what the
    reasoning and tool modes send; ``raw_chunks``: the body of ``raw``; ``port``: 0 picks
    a free one.

    Attributes: ``base_url`` (``http://127.0.0.1:PORT/v1``), ``port``, ``requests`` (the
    :class:`RecordedRequest` list, every request with its JSON ``body``),
    ``open_streams``, ``closed_by_client``, ``completed``, ``connections_accepted``.
    Every constructor argument may be changed as an attribute between requests.
    """

    def __init__(
        self,
        pieces: list[str] | None = None,
        delay: float = 0.0,
        mode: str = "ok",
        *,
        fail_after: int = 2,
        slow_pieces: int = 400,
        fail_times: int = 1,
        retry_after: str | None = None,
        reasoning_pieces: list[str] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        argument_chunk: int = 3,
        raw_chunks: list[bytes] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        self.pieces = list(DEFAULT_PIECES if pieces is None else pieces)
        self.delay = delay
        self.mode = mode
        self.fail_after = fail_after
        self.slow_pieces = slow_pieces
        self.fail_times = fail_times
        self.retry_after = retry_after
        self.reasoning_pieces = list(DEFAULT_REASONING if reasoning_pieces is None
                                     else reasoning_pieces)
        self.tool_calls = list(DEFAULT_TOOL_CALLS if tool_calls is None else tool_calls)
        self.argument_chunk = argument_chunk
        self.raw_chunks = list(raw_chunks or [])
        self.verbose = verbose
        self._failed = 0
        self._call_seq = 0
        self._released = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._cond = threading.Condition()
        self._stats = _Stats()
        self._stream_seq = 0
        self._stopping = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL},
            name=f"fake-openai-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client as ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def open_streams(self) -> int:
        """Streaming responses in progress right now."""
        with self._cond:
            return self._stats.open_streams

    @property
    def closed_by_client(self) -> int:
        """Streams the client hung up on before they ended."""
        with self._cond:
            return self._stats.closed_by_client

    @property
    def completed(self) -> int:
        """Streams that were sent to the end (including deliberate errors and drops)."""
        with self._cond:
            return self._stats.completed

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted so far (keep-alive reuses one for many requests)."""
        with self._cond:
            return self._stats.accepted

    def wait_closed(self, timeout: float = 5.0, count: int = 1) -> bool:
        """Wait until ``count`` streams in all were closed by the client; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stats.closed_by_client >= count, timeout)

    def wait_completed(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` streams in all were sent to the end; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stats.completed >= count, timeout)

    def wait_streams(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` streams are open at once; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stats.open_streams >= count, timeout)

    def wait_requests(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` requests in all were received; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= count, timeout)

    def release(self) -> None:
        """Let every ``hold`` stream (those waiting and those to come) go on to its end."""
        self._released.set()

    def stop(self) -> None:
        """Stop serving and drop every connection, even those of hanging handlers."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._cond:
            connections = list(self._stats.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def fake_openai(**kwargs: Any) -> Iterator[FakeOpenAI]:
    """``with fake_openai(mode="slow") as fake:``, the same as ``with FakeOpenAI(...)``."""
    with FakeOpenAI(**kwargs) as fake:
        yield fake


def main(argv: list[str] | None = None) -> int:
    """Run the fake as a process until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_openai", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mode", default="ok", help="default mode: " + ", ".join(MODES))
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between pieces")
    parser.add_argument("--text", default=None, help="the reply, streamed word by word")
    parser.add_argument("--fail-after", type=int, default=2)
    parser.add_argument("--slow-pieces", type=int, default=400)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    fake = FakeOpenAI(
        pieces=split_words(args.text) if args.text is not None else None,
        delay=args.delay,
        mode=args.mode,
        fail_after=args.fail_after,
        slow_pieces=args.slow_pieces,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
    )
    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"FAKE_OPENAI_READY {fake.base_url}", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
