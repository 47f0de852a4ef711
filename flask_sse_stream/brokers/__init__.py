"""Brokers, chosen by URL: ``memory://`` (default, one process) or ``redis://``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import Broker, BrokerError, Subscription, valid_channel

__all__ = ["Broker", "BrokerError", "Subscription", "create_broker", "valid_channel"]


def create_broker(url: str, *, history_size: int = 1000, **options: Any) -> Broker:
    """Make the broker named by ``url``; raises ``ValueError`` at startup for a bad URL."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(history_size=history_size)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBroker  # imports the optional redis package

        return RedisBroker(url, history_size=history_size, **options)
    raise ValueError(f"SSE_BROKER_URL: unsupported scheme in {url!r} (memory:// or redis://)")
