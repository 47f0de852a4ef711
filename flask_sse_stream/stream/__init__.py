"""A streaming response: the body that writes what a producer hands over (heartbeats,
disconnects, direct writes), the ``@sse_stream`` decorator, and the open-stream registry
(caps, stats, shutdown)."""
