"""Peer: sse-starlette's EventSourceResponse on uvicorn.

Broadcast via one ``asyncio.Queue`` per subscriber, the way the sse-starlette examples do
it; each subscriber's generator yields a dict that sse-starlette encodes. sse-starlette
watches for ``http.disconnect`` and pings every ``BENCH_HEARTBEAT`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from common import CHANNEL, HEARTBEAT, Schedule, float_arg, int_arg, stamp
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

subscribers: set[asyncio.Queue[str]] = set()
state = {"open_streams": 0}


def _args(request: Request) -> dict[str, list[str]]:
    return {k: request.query_params.getlist(k) for k in request.query_params}


async def stream(request: Request) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[str] = asyncio.Queue()
        subscribers.add(q)
        state["open_streams"] += 1
        try:
            yield {"comment": "open"}
            while True:
                yield {"data": await q.get()}
        finally:
            subscribers.discard(q)
            state["open_streams"] -= 1

    return EventSourceResponse(events(), ping=HEARTBEAT)


async def chat(request: Request) -> EventSourceResponse:
    args = _args(request)
    tokens = int_arg(args, "tokens", 20, 100_000)
    rate = float_arg(args, "rate", 20.0, 1e4) or 20.0

    async def events() -> AsyncIterator[dict[str, Any]]:
        state["open_streams"] += 1
        try:
            yield {"comment": "open"}
            sched = Schedule(1.0 / rate)
            for i in range(1, tokens + 1):
                delay = sched.delay(i)
                if delay > 0:
                    await asyncio.sleep(delay)
                yield {"data": stamp(i, sched.due(i))}
        finally:
            state["open_streams"] -= 1

    return EventSourceResponse(events(), ping=HEARTBEAT)


async def publish(request: Request) -> JSONResponse:
    args = _args(request)
    body = (await request.body()).decode()
    count = int_arg(args, "count", 1, 1_000_000)
    sched = Schedule(float_arg(args, "interval", 0.0, 60.0))
    warm = "warm" in args
    for i in range(count):
        data = body or stamp(-1 if warm else i)
        for q in tuple(subscribers):
            q.put_nowait(data)
        delay = sched.delay(i + 1)
        await asyncio.sleep(delay if delay > 0 else 0)
    return JSONResponse({"published": count, "subscribers": len(subscribers)})


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(
        {"open_streams": state["open_streams"], "subscribers": {CHANNEL: len(subscribers)}}
    )


app = Starlette(
    routes=[
        Route("/stream", stream),
        Route("/chat", chat),
        Route("/publish", publish, methods=["POST"]),
        Route("/stats", stats),
    ]
)
