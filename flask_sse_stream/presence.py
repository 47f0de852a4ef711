"""The presence route: ``GET {SSE_URL_PREFIX}/presence?channel=NAME`` ->
``{"channel": NAME, "count": N}``, the streams subscribed to the channel in every process
that shares the broker (see ``brokers/presence.py``).

The same checks as the channel route, in the same order: the name (400), the subscribe
token (401/403 with ``SSE_SUBSCRIBE_TOKENS``), ``authorize`` (403). A broker that cannot
be reached gives 503 with ``Retry-After``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, current_app, jsonify, request

from .channels import EXTENSION_KEY, check_access, check_names
from .errors import BrokerError, json_error

if TYPE_CHECKING:
    from .extension import SSEState

__all__ = ["presence_view"]


def presence_view() -> Response:
    """How many streams read the channel the query names (``sse`` if none)."""
    state: SSEState = current_app.extensions[EXTENSION_KEY]
    channels = request.args.getlist("channel") or ["sse"]
    if len(channels) != 1:
        return json_error("name one channel: ?channel=NAME", 400)
    problem = check_names(channels)
    if problem is not None:
        return json_error(problem, 400)
    denied = check_access(state, channels)
    if denied is not None:
        return denied
    try:
        count = state.broker.presence_count(channels[0])
    except BrokerError as exc:
        current_app.logger.warning("SSE presence of %r failed: %s", channels[0], exc)
        return json_error("the event broker is unavailable, retry later", 503,
                          headers={"Retry-After": "2"})
    response = jsonify(channel=channels[0], count=count)
    response.headers["Cache-Control"] = "no-store"
    return response
