"""Clients that behave like browsers: reconnect after ``retry:``, resume with
``Last-Event-ID``, and write down everything they got.

Each client is one asyncio task over raw sockets (HTTP/1.1, chunked bodies, the SSE wire
format), so a single process holds a thousand of them. Faults reach a client from outside
through :meth:`Client.cut` (the socket is aborted mid-stream) and :meth:`Client.stall`
(it stops reading for a while, as a phone in a tunnel does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from flask_sse_stream.chat import DemoBackend

CONNECT_TIMEOUT = 5.0
RCVBUF = 16 * 1024  # small, so a client that stops reading pushes back on the server soon


class HTTPError(Exception):
    pass


@dataclass
class Sse:
    """One parsed SSE item: an event (``kind="event"``), a comment or a lone retry."""

    kind: str
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class Connection:
    """One HTTP request whose response body is read as SSE."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunked = False
        self._left = 0  # bytes left in the current chunk
        self._buf = b""

    @classmethod
    async def open(
        cls, port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"",
        head_timeout: float = CONNECT_TIMEOUT + 5,
    ) -> Connection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), CONNECT_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        conn = cls(reader, writer)
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status_line = await asyncio.wait_for(reader.readline(), head_timeout)
        if not status_line:
            raise HTTPError("no response")
        conn.status = int(status_line.split()[1])
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            conn.headers[key.strip().lower()] = value.strip()
        conn._chunked = conn.headers.get("transfer-encoding", "").lower() == "chunked"
        return conn

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        if not self._chunked:
            return await self.reader.read(65536)
        if self._left == 0:
            size_line = await self.reader.readline()
            if not size_line:
                return b""
            self._left = int(size_line.split(b";")[0].strip() or b"0", 16)
            if self._left == 0:
                return b""
        data = await self.reader.read(self._left)
        if not data:
            return b""
        self._left -= len(data)
        if self._left == 0:
            await self.reader.readexactly(2)
        return data

    async def body(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    async def events(self, on_bytes: Any = None) -> AsyncIterator[Sse]:
        """The WHATWG parsing rules for what this server sends (LF line ends)."""
        data: list[str] = []
        event = ""
        event_id: str | None = None
        retry: int | None = None
        while True:
            chunk = await self.read()
            if not chunk:
                return
            if on_bytes is not None:
                on_bytes()
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8")
                if not line:
                    if data or event or event_id is not None:
                        yield Sse("event", event or "message", "\n".join(data), event_id)
                    elif retry is not None:
                        pass
                    data, event, event_id, retry = [], "", None, None
                    continue
                if line.startswith(":"):
                    yield Sse("comment", data=line[1:])
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
                elif name == "id":
                    event_id = value
                elif name == "retry" and value.isdigit():
                    retry = int(value)
                    yield Sse("retry", retry=retry)

    def abort(self) -> None:
        self.writer.transport.abort()


@dataclass
class Client:
    """What every client kind shares: servers to pick from, faults, its log."""

    cid: int
    ports: list[int]
    rng: random.Random
    slow: bool = False  # reads with a pause after every chunk, all run long
    log: list[list[Any]] = field(default_factory=list)  # [t, what, ...]
    retry_ms: int = 1000
    conn: Connection | None = None
    stalled_until: float = 0.0
    connected: bool = False
    last_byte: float = 0.0
    max_silence: float = 0.0
    max_silence_at: float = 0.0  # wall time the longest silence ended
    silences: list[list[float]] = field(default_factory=list)  # [start, end] over 5 s
    stop: bool = False
    refused: int = 0

    def note(self, *what: Any) -> None:
        self.log.append([round(time.time(), 3), *what])

    def cut(self) -> None:
        if self.conn is not None:
            self.note("cut")
            self.conn.abort()

    def stall(self, seconds: float) -> None:
        self.note("stall", round(seconds, 2))
        self.stalled_until = time.monotonic() + seconds

    def _bytes(self) -> None:
        now = time.monotonic()
        if self.connected and self.last_byte and now - self.last_byte > self.max_silence:
            self.max_silence = now - self.last_byte
            self.max_silence_at = round(time.time(), 3)
        if self.connected and self.last_byte and now - self.last_byte > 5.0:
            end = time.time()
            self.silences.append([round(end - (now - self.last_byte), 3), round(end, 3)])
        self.last_byte = now

    async def pause_if_asked(self) -> None:
        wait = self.stalled_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
            self.last_byte = time.monotonic()  # a silence we made is not the server's
        if self.slow:
            await asyncio.sleep(self.rng.uniform(0.01, 0.05))
            self.last_byte = time.monotonic()

    async def backoff(self) -> None:
        await asyncio.sleep(self.retry_ms / 1000 * self.rng.uniform(0.8, 1.2))

    def port(self) -> int:
        return self.rng.choice(self.ports)

    def record(self) -> dict[str, Any]:
        return {"cid": self.cid, "kind": type(self).__name__, "slow": self.slow,
                "max_silence": round(self.max_silence, 3),
                "max_silence_at": self.max_silence_at, "silences": self.silences,
                "refused": self.refused,
                "log": self.log}

    async def connect(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"", *, eventsource: bool) -> Connection | int | None:
        """The open 200 stream, or 204, or None (a failure, noted and backed off from:
        try again). Anything but 200 or 204 ends an ``EventSource`` for good, so it
        counts as refused there; a fetch client (POST) may retry a 503."""
        try:
            conn = await Connection.open(self.port(), method, path, headers, body)
        except (OSError, asyncio.TimeoutError, HTTPError, ValueError, IndexError) as exc:
            self.note("connect_failed", type(exc).__name__)
            await self.backoff()
            return None
        if conn.status == 204:
            conn.abort()
            return 204
        if conn.status != 200:
            if eventsource:
                self.refused += 1
            self.note("status", conn.status, (await _safe_body(conn))[:200])
            conn.abort()
            await self.backoff()
            return None
        return conn

    async def stream(self, conn: Connection) -> AsyncIterator[Sse]:
        self.conn, self.connected, self.last_byte = conn, True, time.monotonic()
        try:
            async for item in conn.events(self._bytes):
                if item.kind == "retry" and item.retry is not None:
                    self.retry_ms = item.retry
                yield item
                await self.pause_if_asked()
        finally:
            self.connected = False
            self.conn = None
            with contextlib.suppress(Exception):
                conn.writer.close()


class ChannelClient(Client):
    """Subscribes to one or more channels; the harness's publisher numbers every event
    (data ``{"ch": channel, "n": n}``), so the checker knows what each client missed."""

    def __init__(self, *args: Any, channels: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channels = channels
        self.last_id: str | None = None
        self.latest: dict[str, int] = {}

    def record(self) -> dict[str, Any]:
        return {**super().record(), "channels": self.channels}

    async def run(self) -> None:
        query = "&".join(f"channel={c}" for c in self.channels)
        while not self.stop:
            headers = {"Accept": "text/event-stream"}
            if self.last_id is not None:
                headers["Last-Event-ID"] = self.last_id
            conn = await self.connect("GET", f"/stream?{query}", headers, eventsource=True)
            if not isinstance(conn, Connection):
                if conn == 204:  # never for a channel: EventSource would stop for good
                    self.refused += 1
                    self.note("status", 204)
                    await self.backoff()
                continue
            self.note("open", self.last_id)
            try:
                async for item in self.stream(conn):
                    if item.kind != "event":
                        continue
                    if item.id is not None:
                        self.last_id = item.id
                    if item.event == "reset":
                        self.note("reset", item.data)
                    elif item.event == "message":
                        body = json.loads(item.data)
                        self.note("ev", body["ch"], body["n"], item.id)
                        self.latest[body["ch"]] = body["n"]
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.note("error", type(exc).__name__)
            self.note("end")
            if not self.stop:
                await self.backoff()


class ChatClient(Client):
    """Asks for replies one after another (GET or POST) and checks each against the demo
    backend's deterministic text; resumes a dropped reply with ``Last-Event-ID``."""

    def __init__(self, *args: Any, method: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method = method
        self.busy = False

    async def run(self) -> None:
        k = 0
        while not self.stop:
            k += 1
            await self.one_reply(f"chaos {self.cid}/{k} ünïcödé 雪 {self.rng.randrange(10**6)}")
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))

    async def one_reply(self, message: str) -> None:
        self.busy = True
        expected = DemoBackend.reply_for([{"role": "user", "content": message}])
        self.note("ask", message, expected)
        last_id: str | None = None
        stream_id: str | None = None
        try:
            while True:
                headers = {"Accept": "text/event-stream"}
                if last_id is None and stream_id is not None:
                    last_id = f"{stream_id}:0"  # a fetch client knows X-Stream-ID
                if last_id is not None:
                    headers["Last-Event-ID"] = last_id
                if self.method == "GET":
                    path, body = f"/chat/stream?message={quote(message)}", b""
                else:
                    path = "/chat/stream"
                    body = json.dumps({"message": message}).encode()
                    headers["Content-Type"] = "application/json"
                conn = await self.connect(self.method, path, headers, body,
                                          eventsource=self.method == "GET")
                if conn is None:
                    continue
                if conn == 204:
                    self.note("204", last_id)
                    return
                assert isinstance(conn, Connection)
                stream_id = stream_id or conn.headers.get("x-stream-id")
                self.note("open", last_id)
                try:
                    async for item in self.stream(conn):
                        if item.kind != "event":
                            continue
                        if item.id is not None:
                            last_id = item.id
                        sid, _, seq = (item.id or "").rpartition(":")
                        stream_id = stream_id or sid
                        body_json = json.loads(item.data)
                        if item.event == "close":
                            self.note("close", int(seq or 0), body_json.get("finish_reason"),
                                      body_json.get("error"))
                            return
                        self.note("piece", int(seq or 0), body_json.get("content", ""))
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    self.note("error", type(exc).__name__)
                self.note("end")
                if self.stop:
                    self.note("abandoned")
                    return
                await self.backoff()
        finally:
            self.busy = False


class AiSdkClient(Client):
    """The Vercel AI SDK's UI message stream: POST a chat, resume with
    ``GET /api/chat/<id>/stream``, which replays the active reply from its start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.busy = False

    async def run(self) -> None:
        k = 0
        while not self.stop:
            k += 1
            await self.one_reply(f"ai {self.cid}/{k} ünï 雪 {self.rng.randrange(10**6)}", k)
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))

    async def one_reply(self, message: str, k: int) -> None:
        self.busy = True
        chat_id = f"chaos-{self.cid}-{k}"
        expected = DemoBackend.reply_for([{"role": "user", "content": message}])
        self.note("ask", message, expected)
        body = json.dumps({
            "id": chat_id, "trigger": "submit-message", "messageId": None,
            "messages": [{"id": f"u{k}", "role": "user",
                          "parts": [{"type": "text", "text": message}]}],
        }).encode()
        first = True
        try:
            while True:
                if first:
                    method, path = "POST", "/api/chat"
                    headers = {"Content-Type": "application/json"}
                else:
                    method, path, headers = "GET", f"/api/chat/{chat_id}/stream", {}
                # the resume is a GET (an EventSource's rules); the POST is a fetch client's
                conn = await self.connect(method, path, headers, body if first else b"",
                                          eventsource=not first)
                if conn is None:
                    continue
                if conn == 204:
                    self.note("204", None)
                    return
                assert isinstance(conn, Connection)
                first = False
                self.note("open", None)
                text: list[str] = []  # a resume replays from the start
                try:
                    async for item in self.stream(conn):
                        if item.kind != "event":
                            continue
                        if item.data == "[DONE]":
                            self.note("done", "".join(text))
                            return
                        chunk = json.loads(item.data)
                        kind = chunk.get("type")
                        if kind == "text-delta":
                            text.append(chunk.get("delta", ""))
                        elif kind in ("error", "abort"):
                            self.note("fail", kind, chunk.get("errorText"))
                        elif kind == "finish":
                            self.note("finish", chunk.get("finishReason"))
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    self.note("error", type(exc).__name__)
                self.note("end", "".join(text))
                if self.stop:
                    self.note("abandoned")
                    return
                await self.backoff()
        finally:
            self.busy = False


async def _safe_body(conn: Connection) -> str:
    try:
        return (await asyncio.wait_for(conn.body(), 2)).decode("utf-8", "replace")
    except Exception:
        return ""
