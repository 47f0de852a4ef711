"""An independent, literal implementation of the WHATWG event-stream parser, for tests.

Written from the spec's algorithm (html.spec.whatwg.org, "Interpreting an event stream"),
not from the library's encoder, so a round trip through it checks the encoder against the
standard rather than against itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ParsedEvent:
    type: str
    data: str
    last_event_id: str


@dataclass
class ParseResult:
    events: list[ParsedEvent]
    retry: int | None
    last_event_id: str


def parse(stream: bytes) -> ParseResult:
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    events: list[ParsedEvent] = []
    data, event_type, last_id, retry = "", "", "", None
    # split into lines on CRLF, LF or CR; a trailing incomplete line is not processed
    lines: list[str] = []
    i, start = 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "\r\n":
            lines.append(text[start:i])
            if ch == "\r" and i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
            start = i + 1
        i += 1
    for line in lines:
        if line == "":
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append(ParsedEvent(event_type or "message", data, last_id))
            data, event_type = "", ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                last_id = value
        elif field == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return ParseResult(events, retry, last_id)
