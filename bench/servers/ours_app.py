"""Ours: flask-sse-stream on gunicorn's gevent worker, memory:// or redis:// broker.

``SSE(app)`` serves ``GET /stream?channel=NAME``; this app adds the bench endpoints:
``POST /publish?count=K&interval=S&channel=bench`` (server-side publish loop calling
``sse.publish``), ``GET /chat?tokens=N&rate=R`` (an ``@sse_stream`` generator view
yielding the same payload string as every other server's chat, so only the streaming
path differs) and ``GET /stats`` (``sse.stats()``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

from common import CHANNEL, HEARTBEAT, Schedule, float_arg, int_arg, stamp
from flask import Flask, request

from flask_sse_stream import SSE, sse_stream

app = Flask(__name__)
app.config["SSE_BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", "memory://")
app.config["SSE_HEARTBEAT_INTERVAL"] = HEARTBEAT
# a burst of K events must not disconnect subscribers as "slow clients"
app.config["SSE_SUBSCRIBER_QUEUE"] = int(os.environ.get("BENCH_SUBSCRIBER_QUEUE", "100000"))
app.config["SSE_MAX_STREAMS"] = None
# the library's default (on); "0" keeps every write on the writer greenlet (the WSGI path)
app.config["SSE_DIRECT_WRITE"] = os.environ.get("BENCH_DIRECT_WRITE", "1") != "0"
sse = SSE(app)


def _args() -> dict[str, list[str]]:
    return {k: request.args.getlist(k) for k in request.args}


@app.post("/publish")
def publish() -> dict[str, Any]:
    args = _args()
    body = request.get_data(as_text=True)
    count = int_arg(args, "count", 1, 1_000_000)
    sched = Schedule(float_arg(args, "interval", 0.0, 60.0))
    channel = request.args.get("channel", CHANNEL)
    warm = "warm" in args
    last = ""
    for i in range(count):
        last = sse.publish(body or stamp(-1 if warm else i), channel=channel)
        delay = sched.delay(i + 1)
        time.sleep(delay if delay > 0 else 0)  # gevent-patched: lets deliveries run
    return {"published": count, "last_id": last}


@app.get("/chat")
@sse_stream
def chat() -> Iterator[str]:
    args = _args()
    tokens = int_arg(args, "tokens", 20, 100_000)
    rate = float_arg(args, "rate", 20.0, 1e4) or 20.0
    sched = Schedule(1.0 / rate)
    for i in range(1, tokens + 1):
        delay = sched.delay(i)
        if delay > 0:
            time.sleep(delay)
        yield stamp(i, sched.due(i))


@app.get("/stats")
def stats() -> dict[str, Any]:
    return dict(sse.stats())
