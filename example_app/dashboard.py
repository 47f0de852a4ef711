"""The live dashboard (``/dashboard``): visitors online, an exchange rate, a sales total.

The page opens one stream of three channels with ``last=1``
(``/stream?channel=visitors&channel=fx.eurusd&channel=sales&last=1``), so it shows the
current rate and total at once instead of at the next publish, and counts the visitors
from the ``presence`` events of ``visitors`` (``SSE_PRESENCE``; nothing is published
there: its subscribers are the open dashboards).

The feed publishes every ``DASHBOARD_INTERVAL`` seconds (default: ``TICKER_INTERVAL``).
Its values are a function of the clock, the same in every worker: EUR/USD as a bounded
random walk (pseudo-random anchors a minute apart, interpolated, with jitter), and the
day's sales as a running total that only grows. With several workers each publishes the
same values; a page may then see a value twice, which changes nothing on screen.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from flask import Flask, render_template, url_for

from flask_sse_stream import SSE, BrokerError

__all__ = ["CHANNELS", "rate_at", "register_dashboard", "sales_total_at"]

CHANNELS = ("visitors", "fx.eurusd", "sales")
ANCHOR_STEPS = 60  # the walk's pseudo-random anchors are this many steps apart


def _uniform(*parts: object) -> float:
    """A pseudo-random number in [0, 1) fixed by ``parts`` (the same in every process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def rate_at(step: int) -> float:
    """EUR/USD at ``step``: anchors within 1.0820-1.0880, interpolated, plus jitter."""
    anchor, offset = divmod(step, ANCHOR_STEPS)
    start = 1.0820 + 0.0060 * _uniform("rate", anchor)
    end = 1.0820 + 0.0060 * _uniform("rate", anchor + 1)
    smooth = (1 - math.cos(math.pi * offset / ANCHOR_STEPS)) / 2
    jitter = 0.0004 * (_uniform("jitter", step) - 0.5)
    return round(start + (end - start) * smooth + jitter, 5)


def sales_total_at(step: int, interval: float) -> float:
    """The day's sales after ``step`` steps of ``interval`` seconds: about 37.50 a
    second, never decreasing (each step adds at least 7.50 a second's worth)."""
    return round((37.5 * step + 30.0 * _uniform("sales", step)) * interval, 2)


def _publish_step(sse: SSE, interval: float) -> None:
    now = datetime.now(timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    step = int(now.timestamp() / interval)
    day_step = int((now - midnight).total_seconds() / interval)
    stamp = now.strftime("%H:%M:%S")
    sse.publish({"pair": "EUR/USD", "rate": rate_at(step), "time": stamp}, channel="fx.eurusd")
    sse.publish({"total": sales_total_at(day_step, interval), "currency": "USD",
                 "time": stamp}, channel="sales")


def _feed_forever(app: Flask, sse: SSE, interval: float) -> None:
    while True:
        time.sleep(interval - time.time() % interval)  # on the step's boundary
        with app.app_context():
            try:
                _publish_step(sse, interval)
            except BrokerError:
                app.logger.warning("dashboard: broker unavailable, skipping a step")


def register_dashboard(app: Flask, sse: SSE) -> None:
    """Add ``/dashboard`` and, if ``DASHBOARD_INTERVAL`` (else ``TICKER_INTERVAL``) is
    set, the feed's thread (a greenlet under gunicorn's patched gevent)."""

    @app.get("/dashboard")
    def dashboard() -> Any:
        query = [("channel", channel) for channel in CHANNELS] + [("last", "1")]
        if app.config.get("SSE_SUBSCRIBE_TOKENS"):
            query.append(("token", sse.subscribe_token(list(CHANNELS), expires_in=3600)))
        stream_url = url_for("sse.channel") + "?" + urlencode(query)
        return render_template("dashboard.html", stream_url=stream_url)

    interval = app.config.get("DASHBOARD_INTERVAL")
    if interval is None:
        interval = app.config.get("TICKER_INTERVAL")
    if interval and float(interval) > 0:
        threading.Thread(target=_feed_forever, args=(app, sse, float(interval)),
                         daemon=True, name="dashboard-feed").start()
