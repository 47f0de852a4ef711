"""Server-Sent Events for Flask: flushed streams with heartbeats, channels with
Last-Event-ID replay (in memory or on Redis Streams), and a resumable LLM chat blueprint."""

from .errors import BrokerError
from .extension import SSE
from .stream.registry import close_all_streams
from .stream.requests import last_event_id
from .stream.views import sse_stream
from .wire.event import Event

__all__ = ["SSE", "BrokerError", "Event", "close_all_streams", "last_event_id", "sse_stream"]
__version__ = "0.1.0"
