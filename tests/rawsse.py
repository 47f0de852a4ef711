"""A raw-socket HTTP/1.1 SSE reader: sees exactly what crosses the wire, chunk by chunk."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    raw_head: bytes
    sock: socket.socket
    chunked: bool
    buffer: bytearray = field(default_factory=bytearray)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buffer += data

    def read_chunk(self) -> bytes:
        """The next HTTP chunk's payload (one write of the server); b"" at the end."""
        if not self.chunked:
            if not self.buffer:
                try:
                    self._fill()
                except EOFError:
                    return b""
            out = bytes(self.buffer)
            self.buffer.clear()
            return out
        while b"\r\n" not in self.buffer:
            self._fill()
        size_line, _, rest = bytes(self.buffer).partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        self.buffer[:] = rest
        while len(self.buffer) < size + 2:
            self._fill()
        payload = bytes(self.buffer[:size])
        del self.buffer[: size + 2]
        return payload

    def read_until(self, needle: bytes, limit: int = 1 << 20) -> bytes:
        """Body bytes up to and including ``needle``."""
        body = b""
        while needle not in body:
            chunk = self.read_chunk()
            if not chunk:
                raise EOFError(f"stream ended before {needle!r}; got {body!r}")
            body += chunk
            if len(body) > limit:
                raise AssertionError("needle not found")
        return body

    def read_all(self) -> bytes:
        body = b""
        while True:
            chunk = self.read_chunk()
            if not chunk:
                return body
            body += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
    http10: bool = False,
) -> RawResponse:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"{method} {path} HTTP/1.{0 if http10 else 1}",
        f"Host: {parts.netloc}",
        "Accept: text/event-stream",
    ]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return open_raw(parts.hostname or "127.0.0.1", parts.port or 80, request, timeout)


def open_raw(host: str, port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send ``request`` byte for byte (any header bytes, any target) and read the head."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(request)
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                raise EOFError(f"closed before the response head: {bytes(buffer)!r}")
            buffer += data
    except BaseException:
        sock.close()
        raise
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers_out: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers_out[key] = (headers_out[key] + ", " if key in headers_out else "") + value.strip()
    chunked = "chunked" in headers_out.get("transfer-encoding", "").lower()
    return RawResponse(
        int(status_line.split()[1]), headers_out, head, sock, chunked, bytearray(rest)
    )
