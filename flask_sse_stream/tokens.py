"""Subscribe tokens: a signed, expiring list of channels a client may read.

``EventSource`` cannot send headers, and cookies do not cross origins, so a page that may
read a channel gets a token from an endpoint it is already authenticated for and puts it
in the stream URL (``?token=...``). With ``SSE_SUBSCRIBE_TOKENS = True`` the channel route
then refuses a request without a valid token: missing, forged or expired gives 401 JSON,
a channel the token does not name gives 403 JSON (and ``authorize`` is still asked).

``EventSource`` treats any non-200 answer as final: a reconnect whose token has expired
ends the ``EventSource`` for good. That is intended: the page fetches a fresh token and
opens a new ``EventSource`` (passing ``lastEventId`` in the URL to resume). A token is
checked when a stream opens: an open stream is not cut when its token expires. Tokens are
signed with the app's ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` are accepted too, for key
rotation) with itsdangerous, which Flask already depends on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, current_app
from itsdangerous import BadSignature, URLSafeSerializer

from .brokers.base import valid_channel
from .errors import json_error
from .settings import settings_for

__all__ = ["SALT", "check_token", "init_tokens", "make_token", "tokens_required"]

SALT = "flask-sse-stream.subscribe"


def _serializer(app: Flask) -> URLSafeSerializer:
    secret = app.config.get("SECRET_KEY")
    if not secret:
        raise RuntimeError(
            "subscribe tokens are signed with the app's SECRET_KEY: set app.config['SECRET_KEY']"
        )
    # itsdangerous signs with the last key and accepts every one of them
    keys = [*(app.config.get("SECRET_KEY_FALLBACKS") or ()), secret]
    return URLSafeSerializer(keys, salt=SALT)


def init_tokens(app: Flask) -> None:
    """With tokens on, fail at start-up if ``SECRET_KEY`` is missing (rather than at the
    first subscription)."""
    if tokens_required(app):
        _serializer(app)


def tokens_required(app: Flask) -> bool:
    """``SSE_SUBSCRIBE_TOKENS``, as ``settings.py`` resolved it (``"true"`` from a
    ``FLASK_*`` variable included)."""
    return settings_for(app).subscribe_tokens


def make_token(app: Flask, channels: Iterable[str] | str, expires_in: float = 300) -> str:
    """A token allowing ``channels`` until ``expires_in`` seconds from now."""
    names = [channels] if isinstance(channels, str) else list(channels)
    if not names:
        raise ValueError("a subscribe token must name at least one channel")
    for name in names:
        if not isinstance(name, str) or not valid_channel(name):
            raise ValueError(f"invalid channel name {name!r}")
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, (int, float))
        or not (expires_in > 0 and math.isfinite(expires_in))
    ):
        raise ValueError(f"expires_in must be a positive number of seconds, not {expires_in!r}")
    expires = math.ceil(time.time() + expires_in)
    return str(_serializer(app).dumps({"c": sorted(set(names)), "e": expires}))


def _payload(token: str) -> dict[str, Any] | None:
    try:
        payload = _serializer(current_app).loads(token)
    except BadSignature:
        return None
    # signed, so made by make_token with this key; checked anyway, so that a token signed
    # by other code sharing the key and salt is a 401, never a 500
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("c"), list)
        or not all(isinstance(name, str) for name in payload["c"])
        or not isinstance(payload.get("e"), int)
        or isinstance(payload["e"], bool)
    ):
        return None
    return payload


def check_token(token: str | None, channels: list[str]) -> Response | None:
    """The error response for a request that may not read every one of ``channels``
    (401 for a missing, forged or expired token, 403 if one is not named), or None.
    None at once when ``SSE_SUBSCRIBE_TOKENS`` is off. Called with every channel of the
    stream, so a token for ``[a]`` never reads ``b``."""
    if not tokens_required(current_app):
        return None
    if not token:
        return json_error("a subscribe token is required: add ?token=...", 401)
    payload = _payload(token)
    if payload is None:
        return json_error("invalid subscribe token", 401)
    if payload["e"] < time.time():
        return json_error("subscribe token expired: fetch a new one", 401)
    allowed = set(payload["c"])
    for channel in channels:
        if channel not in allowed:
            return json_error(f"the subscribe token does not allow channel {channel!r}", 403)
    return None
