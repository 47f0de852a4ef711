"""Server-Sent Events for Flask: flushed streams with heartbeats, channels with
Last-Event-ID replay (in memory or on Redis Streams), and a resumable LLM chat blueprint."""

from .brokers import BrokerError
from .event import Event
from .extension import SSE
from .registry import close_all_streams
from .response import last_event_id, sse_stream

__all__ = ["SSE", "BrokerError", "Event", "close_all_streams", "last_event_id", "sse_stream"]
__version__ = "0.1.0"
