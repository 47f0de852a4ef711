"""Brokers, chosen by URL: ``memory://`` (default, one process) or ``redis://``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import BrokerError
from ..metrics import Counters
from .base import Broker, Subscription, valid_channel

__all__ = [
    "Broker",
    "BrokerError",
    "Subscription",
    "broker_kind",
    "create_broker",
    "normalize_url",
    "valid_channel",
]

_KINDS = {"memory": "memory", "redis": "redis", "rediss": "redis", "unix": "redis"}


def broker_kind(url: str) -> str:
    """``"memory"`` or ``"redis"`` for ``url`` (the scheme, case-insensitively): the one
    choice that picks the store of channels and of chat generations alike. Raises
    ``ValueError`` naming ``SSE_BROKER_URL`` for anything else."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except (ValueError, AttributeError):
        scheme = ""
    kind = _KINDS.get(scheme)
    if kind is None:
        raise ValueError(f"SSE_BROKER_URL: unsupported scheme in {url!r} (memory:// or redis://)")
    return kind


def normalize_url(url: str) -> str:
    """``url`` with its scheme in lower case (``REDIS://h`` -> ``redis://h``): the redis
    client accepts only lower-case schemes."""
    scheme, sep, rest = url.partition("://")
    return scheme.lower() + sep + rest if sep else url


def create_broker(
    url: str, *, history_size: int = 1000, counters: Counters | None = None, **options: Any
) -> Broker:
    """Make the broker named by ``url``, counting into ``counters`` (a new one if None);
    raises ``ValueError`` at startup for a bad URL."""
    url = normalize_url(url)
    if broker_kind(url) == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(history_size=history_size, counters=counters)
    from .redis import RedisBroker  # imports the optional redis package

    return RedisBroker(url, history_size=history_size, counters=counters, **options)
