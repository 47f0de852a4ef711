"""One Server-Sent Events message and its wire encoding (no Flask here).

The encoding follows the WHATWG "server-sent events" parsing rules, so that any
spec-conforming client (browsers' ``EventSource``, httpx-sse, fetch-event-source, the
openai SDK) rebuilds exactly what was sent:

* every field is written as ``name: value`` (one space after the colon: the parser strips
  exactly one, so a value that itself starts with a space survives);
* data is split on CRLF, CR and LF (the three line breaks of the spec, and only those:
  ``str.splitlines`` would also split on U+2028, VT, FF and friends, which the parser keeps
  inside a line) into one ``data:`` line per line;
* ``event`` and ``id`` cannot hold a line break (it would end the field and inject another),
  and ``id`` cannot hold NUL (the parser ignores such an id): both raise ``ValueError``;
* a message that carries no dispatchable field (comments, ``retry:`` alone) is written
  without the blank line that would dispatch it, because several clients turn a blank line
  after a comment into an empty phantom message.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "Event",
    "compact_json",
    "data_text",
    "encode_comment",
    "encode_message",
    "encode_retry",
    "to_bytes",
]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_str = json.encoder.encode_basestring  # ensure_ascii=False: text kept as is


def compact_json(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``,
    for every token.

    The same result and errors (``TypeError`` for what JSON cannot hold, ``ValueError``
    for a circular reference and for NaN and the infinities, which are not JSON: a
    ``NaN`` on the wire would fail every client's JSON parser), at about 60 % of the
    cost: ``json.dumps`` with arguments
    builds a ``JSONEncoder`` per call and ``JSONEncoder.encode`` a C encoder plus a
    closure; this calls the C encoder directly (a fresh ``markers`` dict per call keeps
    the circular-reference check exact even after an error).
    """
    if _c_make_encoder is None:  # pragma: no cover - CPython always has the C encoder
        return _json_encoder.encode(value)
    if isinstance(value, str):
        return _encode_str(value)
    # (markers, default, encoder, indent, key and item separators, sort_keys, skipkeys,
    # allow_nan): what JSONEncoder.iterencode passes for this configuration
    encode = _c_make_encoder(
        {}, _json_encoder.default, _encode_str, None, ":", ",", False, False, False
    )
    return "".join(encode(value, 0))


def data_text(data: Any) -> str:
    """The text of a data field: str as is, bytes as UTF-8, anything else as compact JSON."""
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8")
    return compact_json(data)


def _lines(field: bytes, text: str) -> bytes:
    if "\r" not in text and "\n" not in text:
        return field + text.encode("utf-8", "replace") + b"\n"
    return b"".join(
        field + line.encode("utf-8", "replace") + b"\n" for line in _LINE_BREAK.split(text)
    )


def _check_field(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"SSE {name} must not contain a line break: {value!r}")
    if name == "id" and "\0" in value:
        raise ValueError(f"SSE id must not contain NUL: {value!r}")
    return value


def _check_retry(retry: Any) -> int:
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
        raise ValueError(f"SSE retry must be a non-negative int (milliseconds), not {retry!r}")
    return retry


class Event:
    """One SSE message, immutable once made.

    ``data`` may be ``str`` (sent as is), ``bytes`` (decoded as UTF-8) or any JSON value
    (sent as compact JSON). ``None`` means "no data field". ``comment`` becomes ``: ...``
    lines; an event with only a comment and/or ``retry`` is not dispatched by clients.
    Fields are validated here, at construction, so a bad id fails in the code that made it
    and never reaches the wire; they cannot be changed afterwards (``AttributeError``).
    """

    __slots__ = ("comment", "data", "event", "id", "retry")

    comment: str | None
    data: Any
    event: str | None
    id: str | None
    retry: int | None

    def __init__(
        self,
        data: Any = None,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "data", data)
        init(self, "event", None if event is None else _check_field("event", str(event)))
        init(self, "id", None if id is None else _check_field("id", str(id)))
        init(self, "retry", None if retry is None else _check_retry(retry))
        init(self, "comment", comment)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Event is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Event is immutable: cannot delete {name!r}")

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in ("data", "event", "id", "retry", "comment")
            if getattr(self, name) is not None
        )
        return f"Event({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.encode() == other.encode()

    __hash__ = None  # type: ignore[assignment]  # data may be a mutable value

    @property
    def dispatches(self) -> bool:
        """True if a client will dispatch (or record the id of) this message."""
        return self.data is not None or self.event is not None or self.id is not None

    def encode(self) -> bytes:
        """The message as UTF-8 bytes, LF line endings, ready to write to the stream."""
        parts: list[bytes] = []
        if self.comment is not None:
            parts.append(encode_comment(self.comment))
        if self.retry is not None:
            parts.append(b"retry: %d\n" % self.retry)
        if self.event is not None:
            parts.append(_lines(b"event: ", self.event))
        if self.id is not None:
            parts.append(_lines(b"id: ", self.id))
        if self.data is not None:
            parts.append(_lines(b"data: ", data_text(self.data)))
        if self.dispatches:
            parts.append(b"\n")
        return b"".join(parts)


def encode_message(data: Any, event: str | None = None, id: str | None = None) -> bytes:
    """``Event(data, event=event, id=id).encode()`` without making the ``Event``: the
    path of every log entry and published message (the same checks, the same bytes)."""
    head = b""
    if event is not None:
        head = b"event: " + _check_field("event", event).encode("utf-8", "replace") + b"\n"
    if id is not None:
        head += b"id: " + _check_field("id", id).encode("utf-8", "replace") + b"\n"
    if data is None:
        return head + b"\n" if head else b""
    return head + _lines(b"data: ", data_text(data)) + b"\n"


def encode_comment(text: str = "") -> bytes:
    """``: text`` lines, with no blank line after them (see the module docstring)."""
    if not text:
        return b":\n"
    return _lines(b": ", text)


def encode_retry(milliseconds: int) -> bytes:
    """A lone ``retry:`` line (not followed by a blank line: it dispatches nothing)."""
    return b"retry: %d\n" % _check_retry(milliseconds)


def to_bytes(item: Any) -> bytes:
    """Encode one item a streaming view yielded: an ``Event``, or data for a plain message."""
    if isinstance(item, Event):
        return item.encode()
    return _lines(b"data: ", data_text(item)) + b"\n"
