"""The channel demo: publish this worker's stream count to ``ticker`` once a second."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone

from flask import Flask

from flask_sse_stream import SSE, BrokerError


def _tick_forever(app: Flask, sse: SSE, interval: float) -> None:
    tick = 0
    while True:
        time.sleep(interval)
        tick += 1
        with app.app_context():
            data = {
                "tick": tick,
                "time": datetime.now(timezone.utc).strftime("%H:%M:%S"),
                "pid": os.getpid(),
                "open_streams": sse.stats()["open_streams"],
            }
            try:
                sse.publish(data, channel="ticker", event="tick")
            except BrokerError:
                app.logger.warning("ticker: broker unavailable, skipping tick %d", tick)


def start_ticker(app: Flask, sse: SSE, interval: float) -> None:
    """Run the ticker in a daemon thread (a greenlet under gunicorn's patched gevent)."""
    threading.Thread(
        target=_tick_forever, args=(app, sse, interval), daemon=True, name="ticker"
    ).start()
