"""Every ``SSE_*`` and ``CHAT_*`` config key: its default, its coercion, its check.

This module is the one owner of configuration. Defaults are put into ``app.config`` once
(``setdefault``, so the app's own values win), values that arrive as strings or JSON from
``FLASK_*`` environment variables are coerced, and everything is checked once, when
``SSE(app)`` (or the chat blueprint) is set up, into a frozen :class:`Settings`: a bad value
raises ``ValueError`` naming its key at startup, never a 500 on the first stream.
``@sse_stream`` without ``SSE(app)`` resolves the same settings on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from .brokers import broker_kind, normalize_url
from .wire.numbers import ascii_int

__all__ = [
    "CHAT_DEFAULTS",
    "DEFAULTS",
    "SETTINGS_KEY",
    "SSE_DEFAULTS",
    "Settings",
    "apply_defaults",
    "load_settings",
    "settings_for",
]

SETTINGS_KEY = "flask_sse_stream.settings"

SSE_DEFAULTS: dict[str, Any] = {
    "SSE_HEARTBEAT_INTERVAL": 15.0,
    "SSE_RETRY_MS": None,
    "SSE_BROKER_URL": "memory://",
    "SSE_HISTORY_SIZE": 1000,
    "SSE_URL_PREFIX": "/stream",
    "SSE_SUBSCRIBER_QUEUE": 256,
    "SSE_MAX_STREAMS": None,
    "SSE_MAX_STREAM_SECONDS": None,
    "SSE_SHUTDOWN_RETRY_MS": 1000,
    "SSE_WRITE_TIMEOUT": 30.0,
    # only ever used where it is exact (gunicorn's gevent worker iterating the body itself)
    "SSE_DIRECT_WRITE": True,
    "SSE_SUBSCRIBE_TOKENS": False,
    # a Redis publish succeeds once this many replicas have it (0: once the primary has)
    "SSE_REDIS_WAIT_REPLICAS": 0,
    "SSE_REDIS_WAIT_TIMEOUT": 0.5,
    "SSE_PRESENCE": False,
}

CHAT_DEFAULTS: dict[str, Any] = {
    "CHAT_MAX_CHARS": 8000,
    "CHAT_MAX_MESSAGES": 50,
    "CHAT_MAX_BODY_BYTES": 256 * 1024,
    "CHAT_GRACE_SECONDS": 30.0,
    "CHAT_RETENTION_SECONDS": 300.0,
    "CHAT_QUEUE": 1024,
    "CHAT_MAX_GENERATIONS": None,
    "CHAT_MAX_GENERATIONS_PER_CALLER": None,
}

DEFAULTS: dict[str, Any] = {**SSE_DEFAULTS, **CHAT_DEFAULTS}

_NONE_WORDS = frozenset({"", "none", "null"})


def _as_number(key: str, value: Any, *, integer: bool, nullable: bool, minimum: float) -> Any:
    """``value`` as an int (or float), from a number or a string; ``ValueError`` naming
    ``key`` otherwise. A float that is integral (``1500.0``, as JSON often gives) is an
    int key's int."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NONE_WORDS:
            value = None
        else:
            try:
                number = ascii_int(text, 4000)
                value = float(text) if number is None else number
            except ValueError:
                raise ValueError(f"{key} must be a number, not {value!r}") from None
    if value is None:
        if nullable:
            return None
        raise ValueError(f"{key} must be set (a number), not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, not {value!r}")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{key} must be a whole number, not {value!r}")
            value = int(value)
    else:
        value = float(value)
    if value < minimum:
        raise ValueError(f"{key} must be at least {minimum:g}, not {value!r}")
    return value


def _int(minimum: int = 0, nullable: bool = False) -> Callable[[str, Any], Any]:
    return lambda key, value: _as_number(
        key, value, integer=True, nullable=nullable, minimum=minimum
    )


def _seconds(nullable: bool = True) -> Callable[[str, Any], Any]:
    return lambda key, value: _as_number(
        key, value, integer=False, nullable=nullable, minimum=0
    )


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _bool(key: str, value: Any) -> bool:
    """A bool, or one of the usual words for one (from an environment variable)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(f"{key} must be true or false, not {value!r}")


def _broker_url(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a URL string, not {value!r}")
    broker_kind(value)  # raises ValueError naming the key for an unknown scheme
    return normalize_url(value)


def _wait_timeout(key: str, value: Any) -> float:
    """Seconds for ``WAIT``: above 0 (Redis reads 0 as forever) and below the 5 s the
    broker's command connections wait for any reply."""
    seconds = float(_as_number(key, value, integer=False, nullable=False, minimum=0.001))
    if seconds > 4.0:
        raise ValueError(f"{key} must be at most 4 seconds, not {value!r}")
    return seconds


def _url_prefix(key: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.startswith("/")):
        return value
    raise ValueError(f"{key} must start with '/' (or be None for no route), not {value!r}")


_COERCE: dict[str, Callable[[str, Any], Any]] = {
    "SSE_HEARTBEAT_INTERVAL": _seconds(),
    "SSE_RETRY_MS": _int(nullable=True),
    "SSE_BROKER_URL": _broker_url,
    "SSE_HISTORY_SIZE": _int(),
    "SSE_URL_PREFIX": _url_prefix,
    "SSE_SUBSCRIBER_QUEUE": _int(minimum=1),
    "SSE_MAX_STREAMS": _int(nullable=True),
    "SSE_MAX_STREAM_SECONDS": _seconds(),
    "SSE_SHUTDOWN_RETRY_MS": _int(),
    "SSE_WRITE_TIMEOUT": _seconds(),
    "SSE_DIRECT_WRITE": _bool,
    "SSE_SUBSCRIBE_TOKENS": _bool,
    "SSE_REDIS_WAIT_REPLICAS": _int(),
    "SSE_REDIS_WAIT_TIMEOUT": _wait_timeout,
    "SSE_PRESENCE": _bool,
    "CHAT_MAX_CHARS": _int(minimum=1),
    "CHAT_MAX_MESSAGES": _int(minimum=1),
    "CHAT_MAX_BODY_BYTES": _int(minimum=1),
    "CHAT_GRACE_SECONDS": _seconds(nullable=False),
    "CHAT_RETENTION_SECONDS": _seconds(nullable=False),
    "CHAT_QUEUE": _int(minimum=1),
    "CHAT_MAX_GENERATIONS": _int(minimum=1, nullable=True),
    "CHAT_MAX_GENERATIONS_PER_CALLER": _int(minimum=1, nullable=True),
}


@dataclass(frozen=True)
class Settings:
    """The checked, typed configuration of one app. ``0`` (or None) turns the optional
    intervals off: they are None here."""

    heartbeat_interval: float | None
    retry_ms: int | None
    broker_url: str
    broker_kind: str  # "memory" or "redis": picks the store of channels and chat alike
    history_size: int
    url_prefix: str | None
    subscriber_queue: int
    max_streams: int | None
    max_stream_seconds: float | None
    shutdown_retry_ms: int
    write_timeout: float | None
    direct_write: bool
    subscribe_tokens: bool
    redis_wait_replicas: int
    redis_wait_timeout: float
    presence: bool  # every channel stream also gets ``event: presence``
    chat_max_chars: int
    chat_max_messages: int
    chat_max_body_bytes: int
    chat_grace_seconds: float
    chat_retention_seconds: float
    chat_queue: int
    chat_max_generations: int | None
    chat_max_generations_per_caller: int | None


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    """Put every key's default into ``config`` where the app has not set it."""
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)


def load_settings(config: MutableMapping[str, Any]) -> Settings:
    """Set defaults, coerce (writing the typed values back into ``config``) and check
    every key; raises ``ValueError`` naming the first bad key."""
    apply_defaults(config)
    values = {key: coerce(key, config[key]) for key, coerce in _COERCE.items()}
    config.update(values)
    return Settings(
        heartbeat_interval=values["SSE_HEARTBEAT_INTERVAL"] or None,
        retry_ms=values["SSE_RETRY_MS"],
        broker_url=values["SSE_BROKER_URL"],
        broker_kind=broker_kind(values["SSE_BROKER_URL"]),
        history_size=values["SSE_HISTORY_SIZE"],
        url_prefix=values["SSE_URL_PREFIX"],
        subscriber_queue=values["SSE_SUBSCRIBER_QUEUE"],
        max_streams=values["SSE_MAX_STREAMS"],
        max_stream_seconds=values["SSE_MAX_STREAM_SECONDS"] or None,
        shutdown_retry_ms=values["SSE_SHUTDOWN_RETRY_MS"],
        write_timeout=values["SSE_WRITE_TIMEOUT"] or None,
        direct_write=values["SSE_DIRECT_WRITE"],
        subscribe_tokens=values["SSE_SUBSCRIBE_TOKENS"],
        redis_wait_replicas=values["SSE_REDIS_WAIT_REPLICAS"],
        redis_wait_timeout=values["SSE_REDIS_WAIT_TIMEOUT"],
        presence=values["SSE_PRESENCE"],
        chat_max_chars=values["CHAT_MAX_CHARS"],
        chat_max_messages=values["CHAT_MAX_MESSAGES"],
        chat_max_body_bytes=values["CHAT_MAX_BODY_BYTES"],
        chat_grace_seconds=values["CHAT_GRACE_SECONDS"],
        chat_retention_seconds=values["CHAT_RETENTION_SECONDS"],
        chat_queue=values["CHAT_QUEUE"],
        chat_max_generations=values["CHAT_MAX_GENERATIONS"],
        chat_max_generations_per_caller=values["CHAT_MAX_GENERATIONS_PER_CALLER"],
    )


def settings_for(app: Any, *, reload: bool = False) -> Settings:
    """The app's settings, kept in ``app.extensions``: resolved by ``SSE.init_app`` (or
    with ``reload``), else on first use (``@sse_stream`` without ``SSE(app)``, when Flask
    expects the config to be final)."""
    settings = None if reload else app.extensions.get(SETTINGS_KEY)
    if settings is None:
        settings = app.extensions[SETTINGS_KEY] = load_settings(app.config)
    return settings
