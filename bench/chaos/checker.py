"""Read a chaos run's logs and judge the promise: every client has every event it was
promised, once and in order, or was told (``reset``, a ``close`` with an error) that it
missed some; no client is stuck.

``python -m bench.chaos.checker DIR`` prints the report and exits 1 on any failure.

What a channel client was promised: every event whose publish returned an id ("ok")
and started after the client's first connection opened (its subscription existed by
then), on its channels, up to the final event published after the faults stopped. A
publish that failed part-way is "uncertain": that event may or may not exist. A gap of
promised events between two events a client got is a *silent loss* unless a ``reset``
came in between.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

STUCK_SLACK = 5.0  # seconds beyond the heartbeat interval


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def percentile(values: list[float], q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    return data[max(0, min(len(data) - 1, math.ceil(q / 100 * len(data)) - 1))]


class Published:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.by_channel: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for row in rows:
            self.by_channel[row["ch"]][row["n"]] = row

    def promised(self, channel: str, lo: int, hi: int) -> list[int]:
        """Events n with lo <= n < hi whose publish returned an id."""
        rows = self.by_channel.get(channel, {})
        return [n for n in range(lo, hi) if rows.get(n, {}).get("status") == "ok"]

    def status(self, channel: str, n: int) -> str | None:
        return self.by_channel.get(channel, {}).get(n, {}).get("status")

    def first_after(self, channel: str, t: float) -> int:
        """The first n whose publish started after ``t`` (the client's subscription time)."""
        rows = self.by_channel.get(channel, {})
        later = [n for n, row in rows.items() if row["t0"] >= t]
        return min(later) if later else max(rows, default=0) + 1


def stuck(rec: dict[str, Any], heartbeat: float, stalls: list[list[float]]) -> float:
    """The client's longest silence while connected, less the time this harness's own
    loop was stalled during it (a client cannot read then); 0 if none was logged."""
    worst = 0.0
    for start, end in rec.get("silences", []):
        overlap = sum(max(0.0, min(end, b) - max(start, a)) for a, b in stalls)
        worst = max(worst, end - start - overlap)
    if not rec.get("silences") and not stalls:
        worst = rec["max_silence"]
    return worst


def _count_gap(missing: list[int], told: bool, kind: str, who: str, what: str,
               out: Counter[str], examples: list[str]) -> None:
    """Promised events a client did not get: told (a reset came after them) or ``kind``."""
    if not missing:
        return
    if told:
        out["missed_with_reset"] += len(missing)
        return
    out[kind] += len(missing)
    examples.append(f"{who} #{missing[0]}..#{missing[-1]} ({len(missing)}) {what}")


def check_channel_client(rec: dict[str, Any], pub: Published, final: dict[str, int],
                         heartbeat: float, out: Counter[str], examples: list[str],
                         stalls: list[list[float]] = []) -> None:  # noqa: B006
    channels = rec["channels"]
    last: dict[str, int | None] = {ch: None for ch in channels}
    seen: dict[str, set[int]] = {ch: set() for ch in channels}
    reset_since: dict[str, bool] = {ch: False for ch in channels}
    # Where a client's promise starts: its first connection, and again at any connection
    # it opens with no Last-Event-ID (nothing received yet: like a browser, it starts
    # afresh, and what was published while it had no position is not owed to it).
    fresh: dict[str, float | None] = dict.fromkeys(channels)
    for t, what, *rest in rec["log"]:
        if what == "open" and rest and rest[0] is None:
            fresh = dict.fromkeys(channels, t)
        elif what == "reset":
            named = None
            with contextlib.suppress(ValueError, AttributeError, IndexError):
                named = json.loads(rest[0]).get("channel")
            for ch in channels:
                if named is None or named == ch:
                    reset_since[ch] = True
            out["resets"] += 1
        elif what == "ev":
            ch, n = rest[0], rest[1]
            out["events_checked"] += 1
            if ch not in last:
                out["foreign_events"] += 1
                continue
            if n in seen[ch]:
                out["duplicates"] += 1
                examples.append(f"client {rec['cid']}: {ch} #{n} twice")
                continue
            if pub.status(ch, n) != "ok":
                # its publish failed on our side but reached Redis, maybe later than the
                # next ones (another server): no place in the order to check
                out["uncertain_received"] += 1
                seen[ch].add(n)
                continue
            prev = last[ch]
            if prev is not None and n < prev:
                out["out_of_order"] += 1
                examples.append(f"client {rec['cid']}: {ch} #{n} after #{prev}")
                continue
            lo = prev + 1 if prev is not None else pub.first_after(ch, fresh[ch] or t)
            missing = pub.promised(ch, lo, n)
            _count_gap(missing, reset_since[ch], "silent_loss",
                       f"client {rec['cid']}: {ch}", f"missing before #{n}, no reset",
                       out, examples)
            seen[ch].add(n)
            last[ch] = n
            reset_since[ch] = False
    for ch in channels:
        prev = last[ch]
        lo = prev + 1 if prev is not None else pub.first_after(ch, fresh[ch] or math.inf)
        missing = pub.promised(ch, lo, final.get(ch, 0) + 1)
        _count_gap(missing, reset_since[ch], "never_received",
                   f"client {rec['cid']}: {ch}", f"never arrived (last #{prev})",
                   out, examples)
    if stuck(rec, heartbeat, stalls) > heartbeat + STUCK_SLACK:
        out["stuck"] += 1
        examples.append(f"client {rec['cid']}: silent for {rec['max_silence']:.1f}s, until "
                        f"{_clock(rec.get('max_silence_at'))}")
    out["refused"] += rec["refused"]


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "?"


def check_chat_client(rec: dict[str, Any], out: Counter[str], examples: list[str],
                      errors: Counter[str], stalls: list[list[float]] = []) -> None:  # noqa: B006
    replies: list[dict[str, Any]] = []
    for _t, what, *rest in rec["log"]:
        if what == "ask":
            replies.append({"expected": rest[1], "pieces": {}, "end": None, "text": None})
            continue
        if not replies:
            continue
        reply = replies[-1]
        if what == "piece":
            seq, content = rest
            if seq in reply["pieces"]:
                out["duplicates"] += 1
                examples.append(f"client {rec['cid']}: piece {seq} twice")
            elif reply["pieces"] and seq < max(reply["pieces"]):
                out["out_of_order"] += 1
            reply["pieces"][seq] = content
        elif what in ("close", "204", "done", "abandoned"):
            reply["end"] = (what, *rest)
        elif what == "fail":
            reply["fail"] = rest
        elif what == "end" and rest:
            reply["text"] = rest[0]  # AI SDK: the text so far on this connection
    for reply in replies:
        out["replies"] += 1
        end = reply["end"]
        if end is None or end[0] == "abandoned":
            out["stuck_replies"] += 1
            examples.append(f"client {rec['cid']}: a reply never ended")
            continue
        if end[0] == "close":
            seq, reason, error = end[1], end[2], end[3]
            if reason == "stop":
                seqs = sorted(reply["pieces"])
                text = "".join(reply["pieces"][s] for s in seqs)
                if seqs != list(range(1, seq)) or text != reply["expected"]:
                    out["silent_loss"] += 1
                    examples.append(f"client {rec['cid']}: reply closed 'stop' but pieces "
                                    f"{len(seqs)}/{seq - 1}, text equal: "
                                    f"{text == reply['expected']}")
                else:
                    out["replies_complete"] += 1
            else:
                out["replies_told_error"] += 1
                errors[f"{reason}: {error}"] += 1
        elif end[0] == "204" and rec["kind"] == "AiSdkClient":
            # the AI SDK protocol offers only an active reply again: one that finished
            # while the client was away answers 204 (the app's own storage has the rest)
            out["ai_sdk_finished_while_away"] += 1
        elif end[0] == "204":
            out["silent_loss"] += 1
            examples.append(f"client {rec['cid']}: 204 on resume before the close event")
        elif end[0] == "done":
            if reply.get("fail"):
                out["replies_told_error"] += 1
                errors[f"ai-sdk {reply['fail'][0]}: {reply['fail'][1]}"] += 1
            elif end[1] == reply["expected"]:
                out["replies_complete"] += 1
            else:
                out["silent_loss"] += 1
                examples.append(f"client {rec['cid']}: AI SDK text differs from the reply")
    if stuck(rec, 2.0, stalls) > 2.0 + STUCK_SLACK:
        out["stuck"] += 1
        examples.append(f"client {rec['cid']}: silent for {rec['max_silence']:.1f}s, until "
                        f"{_clock(rec.get('max_silence_at'))}")
    out["refused"] += rec["refused"]


def recovery(clients: list[dict[str, Any]], faults: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fault: how long until every client it cut off had a stream open again."""
    by_fault: dict[int, float] = {}
    for rec in clients:
        down: float | None = None
        for t, what, *_ in rec["log"]:
            if what in ("end", "error", "connect_failed", "status") and down is None:
                down = t
            elif what == "open" and down is not None:
                cause = [i for i, f in enumerate(faults) if f["t"] - 1 <= down <= f["t_end"] + 3]
                if cause:
                    i = cause[-1]
                    by_fault[i] = max(by_fault.get(i, 0.0), t - faults[i]["t"])
                down = None
    kinds: dict[str, list[float]] = defaultdict(list)
    for i, took in by_fault.items():
        kinds[faults[i]["kind"]].append(took)
    every = [v for vs in kinds.values() for v in vs]
    return {"all": (percentile(every, 50), percentile(every, 99)),
            **{k: (percentile(v, 50), percentile(v, 99)) for k, v in kinds.items()}}


def resources(samples: list[dict[str, Any]], faults_over: float) -> list[str]:
    """Each resource before the faults, at its peak, when the faults stopped and at the
    end (the clients still connected): the last two should match (flat after faults)."""
    during = [s for s in samples if s["t"] < faults_over]
    after = [s for s in samples if s["t"] >= faults_over]
    if not (during and after):
        return ["not enough samples"]
    first, stopped, last = during[0], after[0], after[-1]
    lines = []
    for key, unit, scale in (("rss", " MiB", 2**20), ("fds", "", 1), ("redis_clients", "", 1),
                             ("open_streams", "", 1)):
        if any(s.get(key) is None for s in (first, stopped, last)):
            continue
        peak = max((s.get(key) or 0) for s in samples)
        lines.append(f"| {key}{unit} | {first[key] / scale:.0f} | {peak / scale:.0f} | "
                     f"{stopped[key] / scale:.0f} | {last[key] / scale:.0f} |")
    greenlets = [sum(s.get("greenlets", {}).values()) for s in (first, stopped, last)]
    lines.append(f"| greenlets (workers sampled) | {greenlets[0]} | — | {greenlets[1]} | "
                 f"{greenlets[2]} |")
    return lines


def plot(samples: list[dict[str, Any]], faults: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not samples:
        return
    t0 = samples[0]["t"]
    xs = [s["t"] - t0 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
    for ax, key, label, scale in zip(
        axes, ("rss", "fds", "redis_clients", "open_streams"),
        ("workers' RSS, MiB", "workers' open fds", "Redis connections", "open streams"),
        (2**20, 1, 1, 1), strict=True,
    ):
        ax.plot(xs, [(s.get(key) or 0) / scale for s in samples])
        ax.set_ylabel(label, fontsize=8)
        for f in faults:
            ax.axvline(f["t"] - t0, color="red", alpha=0.15)
    axes[-1].set_xlabel("seconds (red: a fault)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def check(run_dir: Path) -> tuple[str, bool]:
    meta = json.loads((run_dir / "meta.json").read_text())
    pub = Published(_rows(run_dir / "published.jsonl"))
    clients = _rows(run_dir / "clients.jsonl")
    faults = _rows(run_dir / "faults.jsonl")
    samples = _rows(run_dir / "samples.jsonl")
    stalls = meta.get("harness_stalls", [])
    out: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    examples: list[str] = []
    for rec in clients:
        if rec["kind"] == "ChannelClient":
            check_channel_client(rec, pub, meta["final"], meta["heartbeat"], out, examples,
                                 stalls)
        else:
            check_chat_client(rec, out, examples, errors, stalls)
    statuses = Counter(row["status"] for rows in pub.by_channel.values()
                       for row in rows.values())
    failed = any(out[k] for k in ("silent_loss", "never_received", "duplicates",
                                  "out_of_order", "stuck", "stuck_replies", "refused"))
    rec_times = recovery(clients, faults)
    plan = meta["plan"]
    lines = [
        f"# Chaos run: seed {plan['seed']}, {len(clients)} clients, {plan['seconds']:.0f} s, "
        f"{plan['servers']} servers x {plan['workers']} gevent workers, Redis",
        "",
        f"verdict: **{'FAIL' if failed else 'PASS'}**",
        "",
        "| faults injected | count |", "| --- | ---: |",
        *(f"| {k} | {v} |" for k, v in sorted(Counter(f['kind'] for f in faults).items())),
        "",
        "| checked | count |", "| --- | ---: |",
        f"| publishes ok / uncertain / failed | {statuses['ok']} / {statuses['uncertain']} / "
        f"{statuses['failed']} |",
        *(f"| {k} | {v} |" for k, v in sorted(out.items())),
        "",
        "| recovery after a fault (all cut-off clients back), s | p50 | p99 |",
        "| --- | ---: | ---: |",
        *(f"| {k} | {_f(v[0])} | {_f(v[1])} |" for k, v in rec_times.items()),
        "",
        "| resource (all workers) | before faults | peak | faults stopped | end |",
        "| --- | ---: | ---: | ---: | ---: |",
        *resources(samples, meta["faults_over"]),
    ]
    lines += ["", f"harness loop stalls over 1 s: {len(stalls)}, "
                  f"{sum(b - a for a, b in stalls):.1f} s in all (silences overlapping them "
                  "are not counted as stuck)"]
    if errors:
        lines += ["", "chat replies ended with an error close (the client was told):"]
        lines += [f"- {n} x {e}" for e, n in errors.most_common(8)]
    if examples:
        lines += ["", "first failures:"] + [f"- {e}" for e in examples[:20]]
    report = "\n".join(lines)
    (run_dir / "report.md").write_text(report + "\n")
    plot(samples, faults, run_dir / "resources.png")
    return report, failed


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def main() -> int:
    report, failed = check(Path(sys.argv[1]))
    print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
