"""Shared bits of the apps under test (no third-party imports)."""

from __future__ import annotations

import os
import time

HEARTBEAT = float(os.environ.get("BENCH_HEARTBEAT", "5"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL = "bench"


def stamp(n: int, t: float | None = None) -> str:
    """Event data carrying its send (or scheduled) time: ``{"t": <time.time()>, "n": n}``."""
    return f'{{"t":{time.time() if t is None else t:.6f},"n":{n}}}'


def int_arg(args: dict[str, list[str]], name: str, default: int, top: int) -> int:
    try:
        return max(0, min(top, int(args.get(name, [str(default)])[0])))
    except ValueError:
        return default


def float_arg(args: dict[str, list[str]], name: str, default: float, top: float) -> float:
    try:
        return max(0.0, min(top, float(args.get(name, [str(default)])[0])))
    except ValueError:
        return default


class Schedule:
    """Publish/generation pacing: the i-th item is due at ``start + i * interval``."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.start = time.time()

    def due(self, i: int) -> float:
        return self.start + i * self.interval

    def delay(self, i: int) -> float:
        return self.due(i) - time.time()
