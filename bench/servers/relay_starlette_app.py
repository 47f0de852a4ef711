"""Peer for the relay: sse-starlette + ``openai.AsyncOpenAI`` on uvicorn.

What a user would pick instead of a Flask relay: ``GET /chat/stream?message=TEXT`` calls
``AsyncOpenAI(base_url=BENCH_UPSTREAM_URL).chat.completions.create(stream=True)`` and
yields each piece of content as ``{"content": ...}`` with an id ``<stream_id>:<seq>``
(the same events as our native route), then ``event: close``. The SDK client is the
default one (its own connection pool and limits), built once per process.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from openai import AsyncOpenAI
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

client = AsyncOpenAI(
    base_url=os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8090/v1"),
    api_key="bench",
    max_retries=0,
)
state = {"open_streams": 0}
ids = itertools.count()


async def chat_stream(request: Request) -> EventSourceResponse:
    message = request.query_params.get("message", "hi")
    stream_id = f"s{next(ids)}"

    async def events() -> AsyncIterator[dict[str, Any]]:
        state["open_streams"] += 1
        seq = 0
        finish = "stop"
        try:
            stream = await client.chat.completions.create(
                model="bench",
                messages=[{"role": "user", "content": message}],
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    if choice.delta.content:
                        seq += 1
                        data = json.dumps({"content": choice.delta.content},
                                          separators=(",", ":"), ensure_ascii=False)
                        yield {"id": f"{stream_id}:{seq}", "data": data}
                    finish = choice.finish_reason or finish
            yield {"id": f"{stream_id}:{seq + 1}", "event": "close",
                   "data": json.dumps({"finish_reason": finish})}
        finally:
            state["open_streams"] -= 1

    return EventSourceResponse(events(), ping=15)


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(state)


app = Starlette(routes=[Route("/chat/stream", chat_stream), Route("/stats", stats)])
