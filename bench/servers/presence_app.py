"""Ours for the presence scenarios: the channel route with ``SSE_PRESENCE`` from
``BENCH_PRESENCE`` ("1" on, else off), ``POST /publish?channel=C&count=K`` (warm-up
events) and ``GET /stats``. Library defaults otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

from common import CHANNEL, HEARTBEAT, stamp
from flask import Flask, request

from flask_sse_stream import SSE

app = Flask(__name__)
app.config["SSE_BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", "memory://")
app.config["SSE_HEARTBEAT_INTERVAL"] = HEARTBEAT
app.config["SSE_PRESENCE"] = os.environ.get("BENCH_PRESENCE", "0") == "1"
app.config["SSE_SUBSCRIBER_QUEUE"] = 100_000
sse = SSE(app)


@app.post("/publish")
def publish() -> dict[str, Any]:
    channel = request.args.get("channel", CHANNEL)
    count = int(request.args.get("count", "1"))
    warm = "warm" in request.args
    for i in range(count):
        sse.publish(stamp(-1 if warm else i), channel=channel)
    return {"published": count}


@app.get("/stats")
def stats() -> dict[str, Any]:
    return {**sse.stats(), "pid": os.getpid()}
