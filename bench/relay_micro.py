"""In-process cost of reading an OpenAI-compatible stream: CPU per chunk, three ways.

    python bench/relay_micro.py                     # plain and gevent-patched, both pacings
    python bench/relay_micro.py --replies 50 --modes plain
    python bench/relay_micro.py --modes gevent --profile httpx+parser   # where it goes

Against the same loopback upstream (``bench/upstream.py``, its own process, so its CPU is
not counted), one reply at a time, ``--chunks`` content chunks per reply:

* ``sdk``: iterate the official ``openai`` SDK's stream (``chat.completions.create(...,
  stream=True)``) and read ``chunk.choices[0].delta.content``;
* ``httpx+parser``: ``httpx.Client.stream`` + ``iter_bytes()``, flask_sse_stream's own
  ``EventParser``, one ``json.loads`` per chunk;
* ``raw socket``: the floor: a blocking socket, a minimal HTTP/1.1 chunked decoder, split
  on blank lines, one ``json.loads`` per chunk.

CPU is this process's ``time.process_time()`` over all replies divided by the content
chunks (the request's own cost, spread over a reply's chunks, is included: a relay pays
it once per reply). Two pacings: ``paced`` (``--interval``, 2 ms: every chunk arrives in
its own ``recv``, as at 20 chunks/s) and ``burst`` (no pause: chunks arrive batched).
``gevent`` runs the same code after ``gevent.monkey.patch_all()``, as in a gunicorn
gevent worker. Each mode runs in its own subprocess (patching is for the whole process).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MESSAGES = [{"role": "user", "content": "hello"}]
X = "\u00d7"  # the multiplication sign of the ratios


def event_parser() -> object:
    """The project's spec parser."""
    from flask_sse_stream.wire.parse import EventParser

    return EventParser()


def read_sdk(base: str, replies: int) -> int:
    import openai

    client = openai.OpenAI(base_url=base, api_key="bench", max_retries=0)
    n = 0
    for _ in range(replies):
        stream = client.chat.completions.create(
            model="bench", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )  # fmt: skip
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                n += 1
    client.close()
    return n


def read_httpx(base: str, replies: int) -> int:
    import httpx

    n = 0
    body = {"model": "bench", "messages": MESSAGES, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    with httpx.Client(timeout=30) as client:
        for _ in range(replies):
            parser = event_parser()
            with client.stream("POST", base + "/chat/completions", json=body) as response:
                done = False
                for data in response.iter_bytes():
                    for event in parser.feed(data):  # type: ignore[attr-defined]
                        if event.data == "[DONE]":
                            done = True
                            break
                        chunk = json.loads(event.data)
                        choices = chunk.get("choices")
                        if choices and choices[0].get("delta", {}).get("content"):
                            n += 1
                    if done:
                        break
    return n


def read_raw(base: str, replies: int) -> int:
    host_port, _, path = base.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    body = json.dumps({"model": "bench", "messages": MESSAGES, "stream": True}).encode()
    request = (
        f"POST /{path}/chat/completions HTTP/1.1\r\nHost: {host_port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    n = 0
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for _ in range(replies):
            sock.sendall(request)
            n += raw_reply(sock)
    finally:
        sock.close()
    return n


def raw_reply(sock: socket.socket) -> int:
    """Read one chunked SSE reply (keep-alive); count the chunks with content."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    buf = buf.partition(b"\r\n\r\n")[2]
    body = b""
    n = 0
    ended = False
    while True:
        # dechunk what has arrived
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(buf[:eol], 16)
            if size == 0:
                ended = True
                break
            if len(buf) < eol + 2 + size + 2:
                break
            body += buf[eol + 2 : eol + 2 + size]
            buf = buf[eol + 4 + size :]
        while True:
            end = body.find(b"\n\n")
            if end < 0:
                break
            line, body = body[:end], body[end + 2 :]
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                chunk = json.loads(line[6:])
                choices = chunk["choices"]
                if choices and choices[0]["delta"].get("content"):
                    n += 1
        if ended:
            return n
        data = sock.recv(65536)
        if not data:
            return n
        buf += data


READERS: dict[str, Callable[[str, int], int]] = {
    "sdk": read_sdk,
    "httpx+parser": read_httpx,
    "raw socket": read_raw,
}


def measure(port: int, chunks: int, interval: float, replies: int) -> dict[str, dict[str, float]]:
    base = f"http://127.0.0.1:{port}/c{chunks}/i{interval}/v1"
    out: dict[str, dict[str, float]] = {}
    for name, reader in READERS.items():
        reader(base, 1)  # warm up: imports, connection pool
        cpu0, wall0 = time.process_time(), time.monotonic()
        n = reader(base, replies)
        cpu = time.process_time() - cpu0
        out[name] = {"chunks": n, "cpu_us_per_chunk": round(1e6 * cpu / max(n, 1), 2),
                     "wall_s": round(time.monotonic() - wall0, 2)}  # fmt: skip
    return out


def profile_reader(port: int, chunks: int, interval: float, replies: int, name: str) -> None:
    """cProfile (CPU time) of one reader, paced: the functions with the most own time."""
    # bench/profile.py would shadow the standard library's profile module (cProfile needs it)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    import cProfile
    import pstats

    base = f"http://127.0.0.1:{port}/c{chunks}/i{interval}/v1"
    READERS[name](base, 1)
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    n = READERS[name](base, replies)
    prof.disable()
    stats = pstats.Stats(prof)
    rows = sorted(
        ((tt, ct, nc, f"{Path(f).parent.name}/{Path(f).name}:{line}({fn})" if line else fn)
         for (f, line, fn), (_cc, nc, tt, ct, _c) in stats.stats.items()),  # type: ignore[attr-defined]
        reverse=True,
    )  # fmt: skip
    print(f"# {name}, {n} chunks: own µs per chunk, cumulative µs per chunk, calls per chunk")
    for tt, ct, nc, where in rows[:25]:
        print(f"  {1e6 * tt / n:8.2f} {1e6 * ct / n:8.2f} {nc / n:6.2f}  {where}")


def child_main(args: argparse.Namespace) -> None:
    if args.child == "gevent":
        from gevent import monkey

        monkey.patch_all()
    sys.path.insert(0, str(ROOT))
    if args.profile:
        profile_reader(args.port, args.chunks, args.interval, args.replies, args.profile)
        return
    result = {}
    for pacing, interval in (("paced", args.interval), ("burst", 0.0)):
        result[pacing] = measure(args.port, args.chunks, interval, args.replies)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replies", type=int, default=30)
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.002, help="paced: s between chunks")
    ap.add_argument("--modes", default="plain,gevent")
    ap.add_argument("--profile", default=None, metavar="READER",
                    help=f"cProfile one reader, paced ({', '.join(READERS)})")  # fmt: skip
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    sys.path.insert(0, str(BENCH))
    import os

    from run import free_port, stop, wait_http

    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH / "upstream.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    results: dict[str, object] = {}
    try:
        wait_http(port, upstream, "/stats", 15)
        for mode in args.modes.split(","):
            extra = ["--profile", args.profile] if args.profile else []
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--port", str(port),
                 "--replies", str(args.replies), "--chunks", str(args.chunks),
                 "--interval", str(args.interval), *extra],
                capture_output=True, text=True, check=False, cwd=ROOT,
            )  # fmt: skip
            if args.profile:
                print(f"## {mode}\n{done.stdout}{done.stderr[-2000:]}")
                continue
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        stop(upstream)
    if args.profile:
        return 0
    load = os.getloadavg()
    print(f"# relay_micro: {args.replies} replies x {args.chunks} chunks; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print("\n| mode | pacing | reader | CPU µs per chunk | ÷ raw socket |")
    print("| --- | --- | --- | ---: | ---: |")
    for mode, by_pacing in results.items():
        for pacing, by_reader in by_pacing.items():  # type: ignore[attr-defined]
            floor = by_reader["raw socket"]["cpu_us_per_chunk"]
            for reader, res in by_reader.items():
                per = res["cpu_us_per_chunk"]
                print(f"| {mode} | {pacing} | {reader} | {per:.1f} | {per / floor:.1f}{X} |")
    print("\n" + json.dumps({"results": results, "loadavg": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
