"""The newest entries of a stream, for ``?last=N`` (``brokers/redis.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import mapped_errors
from .ids import text

if TYPE_CHECKING:
    from .log import RedisLog

__all__ = ["newest"]


def newest(log: RedisLog, key: str, count: int) -> tuple[list[tuple[str, dict[Any, Any]]], str]:
    """The stream's newest ``count`` entries, oldest first, and the id just before the
    first of them ("0-0" when they are all the stream holds): where a client stands
    before it is sent them. One ``XREVRANGE ... COUNT count+1``. Raises BrokerError."""
    with mapped_errors():
        page = log.client.xrevrange(key, max="+", min="-", count=count + 1)
    entries = [(text(raw_id), fields) for raw_id, fields in page]
    before = entries[count][0] if len(entries) > count else "0-0"
    return entries[:count][::-1], before
