"""The chaos harness (bench/chaos): its checker on logs made by hand (fast), and a seeded
60-second run against real gunicorn servers and redis-server (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import checker
from tests.servers import ROOT

T = 1000.0


def write_run(tmp: Path, clients: list[dict[str, Any]], published: list[dict[str, Any]],
              final: dict[str, int]) -> Path:
    meta = {"plan": {"seed": 0, "seconds": 1, "servers": 1, "workers": 1},
            "faults_over": T + 50, "final": final, "heartbeat": 2.0}
    (tmp / "meta.json").write_text(json.dumps(meta))
    for name, rows in (("clients", clients), ("published", published)):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp


def ok(ch: str, n: int, status: str = "ok") -> dict[str, Any]:
    return {"ch": ch, "n": n, "status": status, "id": f"{n}-0", "t0": T + n, "t1": T + n}


def channel_client(log: list[list[Any]]) -> dict[str, Any]:
    return {"cid": 1, "kind": "ChannelClient", "channels": ["a"], "max_silence": 1.0,
            "refused": 0, "log": [[T, "open", None], *log]}


PUBLISHED = [ok("a", n) for n in range(1, 6)]


def ev(n: int) -> list[Any]:
    return [T + n + 0.5, "ev", "a", n, f"{n}-0"]


def test_every_event_passes(tmp_path: Path) -> None:
    run = write_run(tmp_path, [channel_client([ev(n) for n in range(1, 6)])], PUBLISHED,
                    {"a": 5})
    report, failed = checker.check(run)
    assert not failed, report


def test_a_gap_without_reset_is_a_silent_loss(tmp_path: Path) -> None:
    log = [ev(1), ev(2), ev(4), ev(5)]
    _report, failed = checker.check(write_run(tmp_path, [channel_client(log)], PUBLISHED,
                                              {"a": 5}))
    assert failed


def test_a_gap_after_a_reset_is_told(tmp_path: Path) -> None:
    log = [ev(1), ev(2), [T + 3, "reset", "{}"], ev(4), ev(5)]
    report, failed = checker.check(write_run(tmp_path, [channel_client(log)], PUBLISHED,
                                             {"a": 5}))
    assert not failed, report
    assert "| missed_with_reset | 1 |" in report


def test_a_failed_publish_may_be_missing(tmp_path: Path) -> None:
    published = [ok("a", 1), ok("a", 2), ok("a", 3, "uncertain"), ok("a", 4), ok("a", 5)]
    log = [ev(1), ev(2), ev(4), ev(5)]
    _report, failed = checker.check(write_run(tmp_path, [channel_client(log)], published,
                                              {"a": 5}))
    assert not failed


@pytest.mark.parametrize("log", [
    [ev(1), ev(2), ev(2), ev(3), ev(4), ev(5)],  # duplicate
    [ev(1), ev(3), ev(2), ev(4), ev(5)],  # out of order (and a gap when 3 came)
    [ev(1), ev(2), ev(3)],  # the tail never arrived
])
def test_duplicates_disorder_and_missing_tails_fail(tmp_path: Path, log: list[Any]) -> None:
    _report, failed = checker.check(write_run(tmp_path, [channel_client(log)], PUBLISHED,
                                              {"a": 5}))
    assert failed


def chat_client(log: list[list[Any]]) -> dict[str, Any]:
    return {"cid": 2, "kind": "ChatClient", "max_silence": 1.0, "refused": 0,
            "log": [[T, "ask", "hi", "one two"], *log]}


def test_chat_reply_checks(tmp_path: Path) -> None:
    whole = [[T, "piece", 1, "one "], [T, "piece", 2, "two"], [T, "close", 3, "stop", None]]
    _r, failed = checker.check(write_run(tmp_path, [chat_client(whole)], [], {}))
    assert not failed
    lost_piece = [[T, "piece", 1, "one "], [T, "close", 3, "stop", None]]
    _r, failed = checker.check(write_run(tmp_path, [chat_client(lost_piece)], [], {}))
    assert failed
    early_204 = [[T, "piece", 1, "one "], [T, "end"], [T, "204", "x:1"]]
    _r, failed = checker.check(write_run(tmp_path, [chat_client(early_204)], [], {}))
    assert failed
    told = [[T, "piece", 1, "one "], [T, "close", 2, "error", "gone"]]
    _r, failed = checker.check(write_run(tmp_path, [chat_client(told)], [], {}))
    assert not failed


@pytest.mark.slow
def test_seeded_quick_chaos_run_loses_nothing_in_silence(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--quick", "--seed", "7", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    report = (tmp_path / "report.md").read_text() if (tmp_path / "report.md").exists() else ""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "verdict: **PASS**" in report
    assert "| events_checked |" in report  # the run did check something
