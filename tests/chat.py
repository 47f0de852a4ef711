"""Helpers for chat tests: run a chat stream, drop it, resume it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from httpx_sse import connect_sse

from flask_sse_stream.chat import DemoBackend
from tests.rawsse import open_stream
from tests.servers import Server
from tests.sse_parser import ParsedEvent, parse


def demo_reply(prompt: str) -> str:
    return DemoBackend.reply_for([{"role": "user", "content": prompt}])


@dataclass
class ChatResult:
    events: list[ParsedEvent]

    @property
    def pieces(self) -> list[ParsedEvent]:
        return [e for e in self.events if e.type == "message"]

    @property
    def text(self) -> str:
        return "".join(json.loads(e.data)["content"] for e in self.pieces)

    @property
    def close(self) -> dict[str, Any]:
        closes = [e for e in self.events if e.type == "close"]
        assert len(closes) == 1 and self.events[-1] is closes[0], self.events[-3:]
        return json.loads(closes[0].data)  # type: ignore[no-any-return]

    @property
    def stream_id(self) -> str:
        return self.events[0].last_event_id.split(":")[0]

    def seqs(self) -> list[int]:
        return [int(e.last_event_id.rsplit(":", 1)[1]) for e in self.events]


def request_args(method: str, prompt: str | None, body: Any,
                 prefix: str = "/chat") -> dict[str, Any]:
    if method == "GET":
        return {"path": f"{prefix}/stream?" + urlencode({"message": prompt}), "body": b"",
                "headers": {}}
    payload = body if body is not None else {"message": prompt}
    return {"path": f"{prefix}/stream", "body": json.dumps(payload).encode(),
            "headers": {"Content-Type": "application/json"}}


def run_chat(server: Server, method: str = "GET", prompt: str | None = "hi",
             body: Any = None, headers: dict[str, str] | None = None,
             prefix: str = "/chat") -> ChatResult:
    """The whole stream, read with httpx-sse."""
    args = request_args(method, prompt, body, prefix)
    with httpx.Client(base_url=server.url, timeout=30) as client, connect_sse(
        client, method, args["path"], content=args["body"] or None,
        headers={**args["headers"], **(headers or {})},
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        events = [ParsedEvent(e.event, e.data, e.id) for e in source.iter_sse()]
    return ChatResult(events)


def partial_chat(server: Server, method: str, prompt: str, count: int,
                 last_event_id: str | None = None) -> ChatResult:
    """Read ``count`` events over a raw socket, then drop the connection."""
    args = request_args(method, prompt, None)
    headers = dict(args["headers"])
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    with open_stream(server.url + args["path"], method=method, body=args["body"],
                     headers=headers) as resp:
        assert resp.status == 200
        body = b""
        while len(parse(body).events) < count:
            chunk = resp.read_chunk()
            assert chunk, "stream ended early"
            body += chunk
    return ChatResult(parse(body).events[:count])
