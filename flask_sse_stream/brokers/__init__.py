"""Brokers, chosen by URL: ``memory://`` (default, one process) or Redis: ``redis://``,
``rediss://``, ``unix://`` (one server), ``redis+cluster://`` (Redis Cluster),
``redis+sentinel://`` (Sentinel), each ``rediss+...`` for TLS."""

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

_KINDS = {
    "memory": "memory", "redis": "redis", "rediss": "redis", "unix": "redis",
    "redis+cluster": "redis", "rediss+cluster": "redis",
    "redis+sentinel": "redis", "rediss+sentinel": "redis",
}


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
        raise ValueError(
            f"SSE_BROKER_URL: unsupported scheme in {redact(str(url))!r} (memory://, redis://, "
            "rediss://, unix://, redis+cluster://, redis+sentinel://)")
    if kind == "redis":
        try:
            from ..redis.urls import parse_broker_url  # needs the optional redis package
        except ImportError:
            return kind  # making the broker says what is missing
        parse_broker_url(normalize_url(url))  # hosts, master name, options: checked now
    return kind


def normalize_url(url: str) -> str:
    """``url`` with its scheme in lower case (``REDIS://h`` -> ``redis://h``): the redis
    client accepts only lower-case schemes."""
    scheme, sep, rest = url.partition("://")
    return scheme.lower() + sep + rest if sep else url


def redact(url: str) -> str:
    """``url`` without its password (for error messages)."""
    scheme, sep, rest = url.partition("://")
    auth, at, hosts = rest.rpartition("@")
    if not sep or not at:
        return url
    return f"{scheme}://{auth.partition(':')[0]}:***@{hosts}"


def create_broker(
    url: str, *, history_size: int = 1000, counters: Counters | None = None,
    wait_replicas: int = 0, wait_timeout: float = 0.5, **options: Any
) -> Broker:
    """Make the broker named by ``url``, counting into ``counters`` (a new one if None);
    raises ``ValueError`` at startup for a bad URL. ``wait_replicas``, ``wait_timeout``:
    a Redis publish succeeds only once that many replicas acknowledged it (0: off)."""
    url = normalize_url(url)
    if broker_kind(url) == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(history_size=history_size, counters=counters)
    from .redis import RedisBroker  # imports the optional redis package

    return RedisBroker(url, history_size=history_size, counters=counters,
                       wait_replicas=wait_replicas, wait_timeout=wait_timeout, **options)
