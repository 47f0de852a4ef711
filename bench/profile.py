"""Profile one server under one scenario with py-spy (sampling, every greenlet counted).

    pip install py-spy   # not a project dependency: a profiling tool
    python bench/profile.py --server ours-mem --scenario chat --set chat_streams=[1000]
    python bench/profile.py --server ours-mem --scenario isolated --set 'isolated=[[10000,10]]'

Starts the server as ``bench/run.py`` does, runs the driver for the scenario while
``py-spy record --format raw`` samples the (single) gunicorn worker, and prints the
self-time share of the hottest frames and the inclusive share of the parts that matter
for issue 13 (socket writes, gevent's sendall, gunicorn's framing, the mailbox, Flask).
``--report FILE`` re-reads saved stacks.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run

# inclusive: share of busy samples whose stack contains the pattern
INCLUSIVE = {
    "gunicorn handle_request (WSGI writer side)": "handle_request (gunicorn",
    "gunicorn Response.write (chunk framing + sendall)": "write (gunicorn/http/wsgi.py",
    "gevent sendall": "sendall (gevent/_socketcommon.py",
    "  getsockopt in sendall": "getsockopt",
    "  send() syscall (gevent SocketMixin.send)": "SocketMixin.send (",
    "StreamBody.__next__": "__next__ (flask_sse_stream/stream/body.py",
    "mailbox take": "take (flask_sse_stream/runtime/",
    "mailbox put/offer": "put (flask_sse_stream/runtime/",
    "direct write (DirectWriter.write)": "write (flask_sse_stream/stream/direct.py",
    "  non-blocking send (DirectSocket.send)": "send (flask_sse_stream/runtime/gevent.py",
    "producer greenlet (_produce)": "_produce (",
    "  the view's own code (chat)": "chat (ours_app",
    "  to_bytes (encoding)": "to_bytes (",
    "  json": "json/encoder",
    "gevent Timeout": "gevent/timeout.py",
    "broker fan-out": "flask_sse_stream/brokers/",
    "Flask wsgi_app (request setup)": "wsgi_app (flask",
    "greenlet spawn": "spawn (",
    # the relay (issue 23): where a relayed token's CPU goes
    "chat generation runner (backend loop + log append)": "_run (flask_sse_stream/chat/",
    "  OpenAIBackend.stream": "stream (flask_sse_stream/chat/backends",
    "    SDK request (create: build, send, headers)": "Completions.create (openai",
    "    SDK stream iteration (SSE decode, JSON, models)": "Stream.__stream__ (openai",
    "      httpx / httpcore read (h11)": "httpcore",
    "      h11 (HTTP/1.1 parsing)": "h11/",
    "      openai construct_type (chunk models)": "construct_type (openai",
    "  log append -> followers -> client write": "GenerationStore.append (",
    "redis-py": "redis/",
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="ours-mem")
    ap.add_argument("--scenario", default="chat")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None, help="keep the raw folded stacks here")
    ap.add_argument("--report", default=None, help="only summarise saved stacks")
    args = ap.parse_args()
    if args.report:
        report(Path(args.report), args.top)
        return 0
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy not on PATH")
    params = dict(run.FULL_PARAMS)
    for item in args.set:
        k, _, v = item.partition("=")
        params[k] = json.loads(v)
    spec = run.SERVER_SPECS[args.server]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-prof-"))
    raw_path = Path(args.out or log_dir / "stacks.txt")
    run.raise_nofile_limit()
    with run.serve(spec, params["heartbeat"], log_dir, params) as running:
        worker = psutil.Process(running.pid).children()[0].pid
        spy = subprocess.Popen(
            [pyspy, "record", "--pid", str(worker), "--format", "raw", "--rate",
             str(args.rate), "--output", str(raw_path), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result: dict[str, object] = {}

        def drive() -> None:
            result.update(run.run_driver(spec, running, [args.scenario], params))

        t = threading.Thread(target=drive)
        t.start()
        t.join()
        spy.send_signal(2)  # SIGINT: py-spy writes what it has
        spy.wait(30)
    for key, res in result.items():
        print(key, json.dumps(res)[:300])
        for metric in ("cpu_us_per_token", "cpu_us_per_delivery", "cpu_us_per_resume"):
            if isinstance(res, dict) and metric in res:
                print(f"  {metric}: {res[metric]} (under the profiler)")
    report(raw_path, args.top)
    return 0


def package_of(frame: str) -> str:
    """``openai`` for ``construct_type (openai/_models.py:695)``; the file for stdlib."""
    where = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    if "site-packages/" in where:
        where = where.rpartition("site-packages/")[2]
    head = where.split("/", 1)[0]
    return head if "/" in where else f"{head} (stdlib or top level)"


def report(path: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        leaf = stack.rsplit(";", 1)[-1]
        if leaf.startswith(("Hub.run (", "run (gevent/hub.py")):
            continue  # the hub waiting in the event loop: idle, not work
        total += n
        own[leaf] += n
        packages[package_of(leaf)] += n
        for name, pattern in INCLUSIVE.items():
            if pattern in stack:
                inclusive[name] += n
    total = max(total, 1)
    print(f"\n{total} busy samples; self time by package (of the innermost frame):")
    for package, n in packages.most_common(12):
        print(f"  {100 * n / total:5.1f}%  {package}")
    print("\nself time by frame:")
    for frame, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("\ninclusive (stacks containing):")
    for name in INCLUSIVE:
        print(f"  {100 * inclusive[name] / total:5.1f}%  {name}")


if __name__ == "__main__":
    sys.exit(main())
