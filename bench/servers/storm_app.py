"""Ours for the reconnect storm: channels and the chat blueprint on a Redis broker.

``GET /stream?channel=NAME`` (the extension's channel route, history and replay in Redis
Streams), ``/chat/stream`` (the native chat protocol; generations logged in Redis, so a
follower resumes on the worker that replaces the one it was cut from), ``GET /stats``.
Library defaults otherwise (heartbeat, shutdown retry hint, no caps). The chat backend
streams a long reply slowly (``BENCH_STORM_TOKEN_INTERVAL`` s between tokens, the first
at once), so every generation is still running when the worker is stopped.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

from flask import Flask

from flask_sse_stream import SSE
from flask_sse_stream.chat import create_chat_blueprint

INTERVAL = float(os.environ.get("BENCH_STORM_TOKEN_INTERVAL", "2.0"))


class SlowBackend:
    """A long reply, one token every ``INTERVAL`` seconds (the first one at once)."""

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        for i in range(10_000):
            yield f"token{i} "
            time.sleep(INTERVAL)  # gevent-patched


app = Flask(__name__)
app.config["SSE_BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", "memory://")
sse = SSE(app)
app.register_blueprint(create_chat_blueprint(SlowBackend()), url_prefix="/chat")


@app.get("/stats")
def stats() -> dict[str, Any]:
    return dict(sse.stats())
