"""In-process cost of opening one stream: where a resume's CPU goes, and against what.

    python bench/stream_micro.py                    # memory broker, 2,000 calls per route
    python bench/stream_micro.py --redis --profile  # Redis (a throwaway redis-server), cProfile

Under ``gevent.monkey.patch_all()`` (as in a gunicorn gevent worker), with no socket and no
server: each call builds a copy of a prepared WSGI environ, calls the app, takes the
response body's first chunk (what the client's first byte would carry: headers are sent
with it) and closes the body (the client leaves). Routes:

* ``bare``: the bench's bare gevent WSGI app, ``GET /stream`` (the accept storm's floor);
* ``flask: a plain route``: ours' app, a view returning ``"ok"`` (what any Flask request
  costs before our code runs);
* ``channel resume``: ours, ``GET /stream?channel=c`` with ``Last-Event-ID`` one event
  behind (the replay of one event, then live);
* ``chat resume, finished``: ours, ``GET /chat/stream`` with the ``close`` event's id
  (the answer is 204);
* ``chat resume, replay``: ours, the id of the reply's first token (the rest of the log and
  ``close``, then the end).

Prints CPU µs per call (``time.process_time``), and with ``--profile`` the functions with
the most own time and the most cumulative time per call (cProfile's overhead inflates
every figure: read them as shares of the call).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

# bench/profile.py would shadow the standard library's profile module (cProfile needs it)
sys.path = [p for p in sys.path if p not in ("", ".") and not p.rstrip("/").endswith("bench")]
import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH / "servers")]
sys.path.append(str(BENCH))

Call = Callable[[], None]


def environ_for(path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    base, _, query = path.partition("?")
    environ = EnvironBuilder(path=base, query_string=query, headers=headers or {}).get_environ()
    environ["REMOTE_ADDR"] = "127.0.0.1"
    return environ


def wsgi_call(app: Any, environ: dict[str, Any]) -> Call:
    """One request: the app called, the first body chunk taken, the body closed."""

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        return None

    def call() -> None:
        body = app(dict(environ), start_response)
        try:
            for _chunk in body:
                break
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return call


def ours(broker: str) -> tuple[Any, dict[str, Call]]:
    """Ours (channels + chat) and its three resume calls, set up through the test client."""
    from flask import Flask

    from flask_sse_stream import SSE
    from flask_sse_stream.chat import create_chat_blueprint

    class Short:
        def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
            yield from ("one ", "two ", "three")

    app = Flask("stream-micro")
    app.config["SSE_BROKER_URL"] = broker
    sse = SSE(app)
    app.register_blueprint(create_chat_blueprint(Short()), url_prefix="/chat")
    with app.app_context():
        first = sse.publish("zero", channel="c")
        sse.publish("one", channel="c")
    @app.get("/plain")
    def plain() -> str:
        return "ok"

    reply = app.test_client().get("/chat/stream?message=hi").get_data(as_text=True)
    ids = [line[4:] for line in reply.splitlines() if line.startswith("id: ")]
    calls = {
        "flask: a plain route": wsgi_call(app, environ_for("/plain")),
        "channel resume": wsgi_call(app, environ_for("/stream?channel=c",
                                                    {"Last-Event-ID": first})),
        "chat resume, finished": wsgi_call(app, environ_for("/chat/stream",
                                                           {"Last-Event-ID": ids[-1]})),
        "chat resume, replay": wsgi_call(app, environ_for("/chat/stream",
                                                         {"Last-Event-ID": ids[0]})),
    }
    return app, calls


def bare() -> Call:
    import bare_gevent_app

    return wsgi_call(bare_gevent_app.app, environ_for("/stream?channel=bench"))


def per_call(call: Call, n: int) -> float:
    for _ in range(50):
        call()  # warm: imports, caches, first-time set-up
    cpu0 = time.process_time()
    for _ in range(n):
        call()
    return 1e6 * (time.process_time() - cpu0) / n


def profile(call: Call, n: int, top: int) -> str:
    prof = cProfile.Profile(time.process_time)  # CPU, not the wall time spent waiting
    prof.enable()
    for _ in range(n):
        call()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    rows = []
    for (file, line, name), (_cc, ncalls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}({name})" if line else name
        rows.append((tt, ct, ncalls, where))
    text = [f"  own µs/call  cum µs/call  calls/call  function (cProfile, {n} calls)"]
    for tt, ct, nc, where in sorted(rows, reverse=True)[:top]:
        text.append(f"  {1e6 * tt / n:10.1f}  {1e6 * ct / n:11.1f}  {nc / n:10.2f}  {where}")
    text.append("  -- by cumulative time:")
    for tt, ct, nc, where in sorted(rows, key=lambda r: -r[1])[:top]:
        text.append(f"  {1e6 * tt / n:10.1f}  {1e6 * ct / n:11.1f}  {nc / n:10.2f}  {where}")
    return "\n".join(text)


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    from run import free_port, wait_port

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="micro-redis-")
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_port(port, proc, 10)
    return proc, f"redis://127.0.0.1:{port}/0", tmp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="calls per route")
    ap.add_argument("--redis", action="store_true", help="Redis broker (throwaway server)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=22)
    args = ap.parse_args(argv)
    redis = None
    broker = "memory://"
    if args.redis:
        redis, broker, tmp = start_redis()
    try:
        _app, calls = ours(broker)
        routes = {"bare": bare(), **calls}
        results = {name: round(per_call(call, args.n), 1) for name, call in routes.items()}
        load = os.getloadavg()
        print(f"# stream_micro: broker {broker}, {args.n} calls per route, load average "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
        print("\n| route | CPU µs per stream | ÷ bare |\n| --- | ---: | ---: |")
        for name, us in results.items():
            print(f"| {name} | {us:.1f} | {us / results['bare']:.1f}\u00d7 |")
        if args.profile:
            for name, call in routes.items():
                print(f"\n## {name}\n" + profile(call, min(args.n, 1000), args.top))
        print("\n" + json.dumps({"broker": broker, "results": results, "loadavg": load}))
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(5)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
