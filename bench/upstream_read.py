"""CPU per chunk of reading a streamed Chat Completions response, in one process.

    python bench/upstream_read.py [--chunks 2000] [--replies 20] [--repeats 5]

An upstream in a subprocess (raw sockets, keep-alive, one prebuilt chunked
``text/event-stream`` body of ``--chunks`` realistic ``chat.completion.chunk`` messages,
each in its own HTTP chunk) is read by each reader in turn, in this process, with no
monkey-patching; ``time.process_time()`` around ``--replies`` replies, divided by the
chunks read, is the row. Several repeats interleave the readers; the best (least
disturbed) repeat counts. The readers:

* ``openai SDK``: ``OpenAI(...).chat.completions.create(stream=True)``, reading
  ``chunk.choices[0].delta.content`` (what ``OpenAIBackend`` did before);
* ``OpenAIBackend.stream``: the backend itself, text pieces out (what the runner sees);
* ``Upstream.chunks``: its reader alone (httpx, ``EventParser``, ``json.loads``);
* ``httpx iter_bytes`` / ``iter_raw``: httpx's bytes alone, nothing parsed;
* ``raw socket + json``: the floor: recv, split on blank lines, ``json.loads`` (no
  HTTP parsing at all, so it is a bound, not a usable reader);
* ``... orjson``: the same two with ``orjson.loads`` when orjson is importable.

The upstream writes a whole body at once, so reads return many chunks each: this
measures parsing, not per-read wake-ups (the relay scenario in ``bench/run.py`` does).

One run (2 shared cores under load ~3, 2,000 chunks x 20 replies, best of 5), µs of CPU
per chunk: openai SDK 82.2; ``OpenAIBackend.stream`` 10.3 (0.125x); ``Upstream.chunks``
9.6; httpx ``iter_bytes`` 6.5, ``iter_raw`` 6.2; raw socket + json 3.1, + orjson 1.2.
The reader costs httpx plus one ``json.loads`` (~2.5 µs here); orjson would save ~2 µs
a chunk, about 1-2 % of a relayed token's whole CPU, so it is not a dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MESSAGES = [{"role": "user", "content": "hello"}]


def _chunk(index: int, content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {
        "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "object": "chat.completion.chunk",
        "created": 1732000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    data = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def build_response(chunks: int) -> bytes:
    body = [_chunk(0, "")]
    body += [_chunk(i, f" word{i % 97}") for i in range(1, chunks - 1)]
    body.append(_chunk(chunks - 1, None, "stop"))
    done = b"data: [DONE]\n\n"
    body.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
    return head + b"".join(body)


def serve(port_file: str, chunks: int) -> None:
    """The upstream: answer every request on every connection with the same body."""
    import threading

    response = build_response(chunks)
    server = socket.create_server(("127.0.0.1", 0), backlog=128)
    Path(port_file).write_text(str(server.getsockname()[1]))

    def handle(conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                conn.sendall(response)

    parent = os.getppid()

    def orphaned() -> None:  # end with the measuring process, however it ends
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=orphaned, daemon=True).start()
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


# ------------------------------------------------------------------------------ readers


def sdk_reader(base_url: str) -> Callable[[], int]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    def read() -> int:
        n = 0
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        for chunk in stream:
            if chunk.choices:
                _ = chunk.choices[0].delta.content
            n += 1
        return n

    return read


def backend_reader(base_url: str) -> Callable[[], int]:
    from flask_sse_stream.chat import OpenAIBackend

    backend = OpenAIBackend(base_url=base_url, api_key="sk-bench", model="m")

    def read() -> int:
        return sum(1 for piece in backend.stream(MESSAGES) if isinstance(piece, str)) + 2

    return read


def upstream_reader(base_url: str) -> Callable[[], int]:
    from flask_sse_stream.chat.backends.upstream import Upstream

    upstream = Upstream(base_url=base_url, api_key="sk-bench")
    body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode()

    def read() -> int:
        return sum(1 for _ in upstream.chunks(body))

    return read


def httpx_reader(base_url: str, raw: bool) -> Callable[[], int]:
    import httpx

    client = httpx.Client()
    body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode()

    def read() -> int:
        with client.stream("POST", base_url + "/chat/completions", content=body) as response:
            pieces = response.iter_raw() if raw else response.iter_bytes()
            return sum(piece.count(b"\n\n") for piece in pieces)

    return read


def socket_reader(base_url: str, loads: Callable[[bytes], object]) -> Callable[[], int]:
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    sock = socket.create_connection(("127.0.0.1", port))
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")

    def read() -> int:
        sock.sendall(request)
        n = 0
        buffer = b""
        while True:
            data = sock.recv(262144)
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                start = event.find(b"data: ")
                if start < 0:
                    continue
                payload = event[start + 6:]
                if payload == b"[DONE]":
                    while not buffer.endswith(b"0\r\n\r\n"):  # the terminating chunk
                        buffer += sock.recv(16)
                    return n
                loads(payload)
                n += 1

    return read


def measure(read: Callable[[], int], replies: int) -> float:
    read()  # warm up: connect, imports, caches
    chunks = 0
    start = time.process_time()
    for _ in range(replies):
        chunks += read()
    return (time.process_time() - start) / chunks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.chunks)
        return
    port_file = Path(f"/tmp/upstream-read-{os.getpid()}.port")
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file),
                               "--chunks", str(args.chunks)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        base_url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        readers: dict[str, Callable[[], int]] = {
            "openai SDK": sdk_reader(base_url),
            "OpenAIBackend.stream": backend_reader(base_url),
            "Upstream.chunks": upstream_reader(base_url),
            "httpx iter_bytes": httpx_reader(base_url, raw=False),
            "httpx iter_raw": httpx_reader(base_url, raw=True),
            "raw socket + json": socket_reader(base_url, json.loads),
        }
        try:
            import orjson

            readers["raw socket + orjson"] = socket_reader(base_url, orjson.loads)
        except ImportError:
            pass
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, read in readers.items():
                replies = max(args.replies // 10, 1) if name == "openai SDK" else args.replies
                value = measure(read, replies)
                best[name] = min(best.get(name, value), value)
        sdk = best["openai SDK"]
        print(f"{'reader':24} {'CPU µs/chunk':>12} {'vs SDK':>8}")
        for name, value in best.items():
            print(f"{name:24} {value:12.2f} {value / sdk:8.3f}")
    finally:
        server.terminate()
        server.wait()
        port_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
