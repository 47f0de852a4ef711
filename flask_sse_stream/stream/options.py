"""What one streaming response needs to know: heartbeat, retry, headers and the limits,
resolved once from the app's checked settings and the view's own arguments."""

from __future__ import annotations

from typing import Any

from flask import Flask

from ..settings import Settings, settings_for

__all__ = ["UNSET", "StreamOptions"]

UNSET: Any = object()  # an argument not given: the app's setting applies
_NO_HEADERS: dict[str, str] = {}  # shared, never mutated
_DEFAULTS_KEY = "flask_sse_stream.stream_options"  # app.extensions: the shared instance


class StreamOptions:
    """Per-response options. :meth:`for_app` is the shared instance for responses
    without overrides, made once per app (Flask expects the config final by the first
    request); a view with its own ``heartbeat``, ``retry`` or ``headers`` gets its own."""

    __slots__ = (
        "direct_write",
        "headers",
        "heartbeat",
        "max_seconds",
        "retry",
        "shutdown_retry",
        "write_timeout",
    )

    def __init__(
        self,
        settings: Settings,
        heartbeat: float | None = UNSET,
        retry: int | None = UNSET,
        headers: dict[str, str] | None = None,
    ) -> None:
        beat = settings.heartbeat_interval if heartbeat is UNSET else heartbeat
        self.heartbeat: float | None = float(beat) if beat else None
        self.retry: int | None = settings.retry_ms if retry is UNSET else retry
        self.headers = headers or _NO_HEADERS
        self.max_seconds: float | None = settings.max_stream_seconds
        self.shutdown_retry: int = settings.shutdown_retry_ms
        self.write_timeout: float | None = settings.write_timeout
        self.direct_write: bool = settings.direct_write

    @classmethod
    def for_app(cls, app: Flask) -> StreamOptions:
        settings = settings_for(app)
        cached = app.extensions.get(_DEFAULTS_KEY)
        if cached is not None and cached[0] is settings:
            return cached[1]  # type: ignore[no-any-return]
        options = cls(settings)
        app.extensions[_DEFAULTS_KEY] = (settings, options)  # rebuilt if settings reload
        return options
