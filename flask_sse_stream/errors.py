"""The errors the library raises, and the one JSON error body its routes answer with."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

__all__ = ["BrokerError", "json_error"]


class BrokerError(RuntimeError):
    """The broker cannot be reached or refused the operation (e.g. Redis is down)."""


def json_error(message: str, status: int, *, headers: dict[str, str] | None = None,
               body: Any = None) -> Response:
    """A JSON error response: ``{"error": message}`` (or ``body``, for protocols with
    their own error shape), with ``status`` and ``headers``."""
    response = jsonify(body if body is not None else {"error": message})
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response
