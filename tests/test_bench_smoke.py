"""Keep bench/ working: its quick mode runs every scenario against every peer, tiny."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.bench]

pytest.importorskip("sse_starlette", reason="the bench extra is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.bench]


@pytest.mark.timeout(420)  # a few tiny runs of five servers, on a machine that may be busy
def test_quick_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "latest.json").exists()
    for scenario in ("idle", "floor_", "fanout_", "isolated_", "chat_", "churn"):
        assert f"### {scenario}" in done.stdout


@pytest.mark.timeout(120)
def test_quick_relay_and_storm_deliver_every_token_and_resume_every_stream(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--scenarios", "relay,storm",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import json

    raw = json.loads((tmp_path / "latest.json").read_text())["raw"]
    for server in ("relay-bare", "relay-starlette", "relay-ours"):
        (run,) = raw[server]["relay_10"]
        assert run["tokens"] == run["tokens_expected"], (server, run)
        assert run["finish"] == {"stop": run["streams"]}, (server, run)
    for server in ("bare-gevent", "ours-storm"):
        (run,) = raw[server]["storm"]
        assert run["resumed"] == run["streams"], (server, run)
        assert run["gaps"] == 0, (server, run)
