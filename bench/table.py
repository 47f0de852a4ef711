"""Print the README's benchmark table from a full run's ``latest.json``.

    python bench/table.py [bench/results/latest.json]

One row per headline metric, one column per server, medians over the run's repeats (what
``run.py`` put in ``summary``); a ratio in brackets is against the column named in the
row's label, measured in the same run. Nothing here measures: it only formats.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

COLUMNS = [
    ("sse-starlette", "sse-starlette (uvicorn)"),
    ("flask-sse", "flask-sse (Redis)"),
    ("bare-gevent", "bare gevent (ceiling)"),
    ("ours-mem", "ours, memory"),
    ("ours-mem-wsgi", "ours, memory, direct writes off¹"),
    ("ours-mem-2w", "ours, memory, 2 workers"),
    ("ours-redis", "ours, Redis"),
    ("ours-redis-2w", "ours, Redis, 2 workers"),
]

Cell = Callable[[dict[str, Any]], str]
X = "\u00d7"  # the multiplication sign of the README's ratios


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def metric(key: str, digits: int = 1, ratio_to: str | None = None) -> Cell:
    def cell(row: dict[str, Any]) -> str:
        text = num(row.get(key), digits)
        ratio = row.get(f"{key}/{ratio_to}") if ratio_to else None
        if ratio is not None and ratio != 1.0:
            text += f" ({ratio:.2f}{X})"
        return text

    return cell


def pair(first: str, second: str, digits: int = 1) -> Cell:
    return lambda row: f"{num(row.get(first), digits)} / {num(row.get(second), digits)}"


ROWS: list[tuple[str, str, Cell]] = [
    (f"idle RSS per stream, KiB (5k streams; {X} sse-starlette)", "idle",
     metric("rss_per_stream_kb", 1, "sse-starlette")),
    ("idle CPU %, 5k streams, heartbeat every 3 s", "idle", metric("idle_cpu_pct", 1)),
    ("fan-out to 1k, burst: server CPU µs per delivery", "fanout_1000",
     metric("cpu_us_per_delivery", 1)),
    (f"fan-out to 10k, burst: server CPU µs per delivery ({X} sse-starlette)", "fanout_10000",
     metric("cpu_us_per_delivery", 1, "sse-starlette")),
    ("fan-out to 10k, burst: deliveries/s", "fanout_10000", metric("deliveries_per_s", 0)),
    ("fan-out to 10k, 5 events 50 ms apart: p99 publish→receive, ms", "fanout_10000",
     metric("p99_ms", 0)),
    (f"isolated events to 10k (one in flight): CPU µs per delivery ({X} bare gevent)",
     "isolated_10000", metric("cpu_us_per_delivery", 1, "bare-gevent")),
    (f"isolated events to 10k: {X} the send() floor", "isolated_10000", metric("x_floor", 2)),
    ("isolated events to 10k: p99 publish→receive, ms", "isolated_10000", metric("p99_ms", 0)),
    ("chat, 250 replies at 20 tokens/s: p50 / p99 added latency, ms", "chat_250",
     pair("p50_ms", "p99_ms")),
    ("chat, 1,000 replies at 20 tokens/s: p50 / p99 added latency, ms", "chat_1000",
     pair("p50_ms", "p99_ms")),
    (f"chat, 1,000 replies: server CPU µs per token ({X} bare gevent)", "chat_1000",
     metric("cpu_us_per_token", 1, "bare-gevent")),
    ("churn: new streams/s", "churn", metric("streams_per_s", 0)),
    ("disconnect noticed, all of 1,000 dropped streams, s", "churn",
     metric("notice_all_s", 2)),
    ("Redis at 10k subscribers: connections", "redis_10000", metric("redis_clients", 0)),
    ("Redis at 10k, burst: CPU µs per delivery over memory (app + redis-server)",
     "redis_10000", metric("overhead_us_per_delivery", 2)),
]


def table(report: dict[str, Any]) -> str:
    summary = report["summary"]
    servers = [(key, label) for key, label in COLUMNS
               if any(key in summary.get(s, {}) for _, s, _ in ROWS)]
    lines = [
        "| metric | " + " | ".join(label for _, label in servers) + " |",
        "| --- |" + " ---: |" * len(servers),
    ]
    for label, scenario, cell in ROWS:
        rows = summary.get(scenario, {})
        cells = [cell(rows[key]) if key in rows else "—" for key, _ in servers]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    floor = summary.get("floor_10000", {}).get("floor", {}).get("cpu_us_per_send")
    meta = report["meta"]
    lines.append("")
    lines.append(
        f"Run ending {meta['time'][:16].replace('T', ' ')} UTC, {meta['repeat']} repeats "
        "(medians), "
        f"{meta['elapsed_s'] / 60:.0f} min, {meta['machine']['cpus']} cores; send() floor "
        f"{num(floor, 1)} µs."
    )
    return "\n".join(lines)


RELAY_SERVERS = [
    ("relay-bare", "hand-written gevent relay, raw sockets (the floor)"),
    ("relay-starlette", "sse-starlette + AsyncOpenAI (uvicorn)"),
    ("relay-ours", "ours: chat blueprint + OpenAIBackend"),
]
STORM_SERVERS = [
    ("bare-gevent", "bare gevent: accept + first byte (the floor)"),
    ("ours-storm", "ours: channel and chat resumes (Redis)"),
]


def relay_storm_tables(report: dict[str, Any]) -> str:
    """The relay and storm rows (their own servers), when the run has them."""
    summary = report["summary"]
    lines: list[str] = []
    sizes = sorted((k for k in summary if k.startswith("relay_")), key=lambda k: int(k[6:]))
    if sizes:
        lines += [
            "| relay: server | N | CPU µs per relayed token | p50 / p99 added ms | "
            "every token | fell behind |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for key in sizes:
            for server, label in RELAY_SERVERS:
                row = summary[key].get(server)
                if row is None:
                    continue
                cpu = num(row.get("cpu_us_per_token"), 0)
                peers = (("relay-bare", "floor"), ("relay-starlette", "sse-starlette"))
                ratios = [f"{row[f'cpu_us_per_token/{peer}']:.2f}{X} {name}" for peer, name in peers
                          if row.get(f"cpu_us_per_token/{peer}") not in (None, 1.0)]  # fmt: skip
                if ratios:
                    cpu += f" ({', '.join(ratios)})"
                lost = row.get("lost")
                lines.append(
                    f"| {label} | {int(key[6:]):,} | {cpu} | {pair('p50_ms', 'p99_ms')(row)} | "
                    f"{'yes' if lost == 0 else f'{num(lost, 0)} lost'} | "
                    f"{'yes' if row.get('fell_behind') else 'no'} |"
                )
        lines.append("")
    if "storm" in summary:
        lines += [
            "| storm: server | streams | cut → all resumed, s | resumes/s | CPU µs per resume |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for server, label in STORM_SERVERS:
            row = summary["storm"].get(server)
            if row is None:
                continue
            lines.append(
                f"| {label} | {num(row.get('streams'), 0)} | {num(row.get('all_resumed_s'), 1)} | "
                f"{metric('resumes_per_s', 0, 'bare-gevent')(row)} | "
                f"{metric('cpu_us_per_resume', 0, 'bare-gevent')(row)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json")
    report = json.loads(path.read_text())
    if any(k in report["summary"] for _, k, _ in ROWS):
        print(table(report))
    extra = relay_storm_tables(report)
    if extra:
        print("\n" + extra)


if __name__ == "__main__":
    main()
