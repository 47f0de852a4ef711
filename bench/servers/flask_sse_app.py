"""Peer: flask-sse (its Blueprint + Redis pub/sub) on gunicorn's gevent worker.

flask-sse opens one Redis pub/sub connection per stream and sends nothing (not even the
response headers) until the first event; it has no heartbeat, so a disconnected client is
only noticed when the next event fails to write. ``/chat`` is a plain Flask streaming
response (flask-sse has no per-request generator helper).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from common import CHANNEL, REDIS_URL, Schedule, float_arg, int_arg, stamp
from flask import Flask, Response, request, stream_with_context
from flask_sse import sse
from redis import StrictRedis

app = Flask(__name__)
app.config["REDIS_URL"] = REDIS_URL
app.register_blueprint(sse, url_prefix="/stream")
_stats_redis = StrictRedis.from_url(REDIS_URL)


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
    for i in range(count):
        sse.publish(body or stamp(-1 if warm else i), channel=channel)
        delay = sched.delay(i + 1)
        time.sleep(delay if delay > 0 else 0)  # gevent-patched
    return {"published": count}


@app.get("/chat")
def chat() -> Response:
    args = _args()
    tokens = int_arg(args, "tokens", 20, 100_000)
    rate = float_arg(args, "rate", 20.0, 1e4) or 20.0

    def events() -> Iterator[str]:
        yield ": open\n"
        sched = Schedule(1.0 / rate)
        for i in range(1, tokens + 1):
            delay = sched.delay(i)
            if delay > 0:
                time.sleep(delay)
            yield f"data: {stamp(i, sched.due(i))}\n\n"

    return Response(stream_with_context(events()), mimetype="text/event-stream")


@app.get("/stats")
def stats() -> dict[str, Any]:
    numsub = dict(_stats_redis.pubsub_numsub(CHANNEL))
    subs = int(numsub.get(CHANNEL.encode(), 0))
    return {"open_streams": subs, "subscribers": {CHANNEL: subs}}
