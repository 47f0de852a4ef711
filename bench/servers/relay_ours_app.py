"""Ours for the relay: the chat blueprint with ``OpenAIBackend`` in front of the upstream.

``create_chat_blueprint(OpenAIBackend(base_url=BENCH_UPSTREAM_URL))`` at ``/chat`` (the
native protocol: clients use ``GET /chat/stream?message=TEXT``), ``GET /stats``; memory
broker, library defaults otherwise (no caps on generations or streams, as out of the box).
Served by gunicorn's gevent worker with the packaged config (``gunicorn_ours.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

from flask import Flask

from flask_sse_stream import SSE
from flask_sse_stream.chat import OpenAIBackend, create_chat_blueprint

app = Flask(__name__)
app.config["SSE_BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", "memory://")
sse = SSE(app)
backend = OpenAIBackend(
    base_url=os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8090/v1"),
    api_key="bench",
    model="bench",
)
app.register_blueprint(create_chat_blueprint(backend), url_prefix="/chat")


@app.get("/stats")
def stats() -> dict[str, Any]:
    return dict(sse.stats())
