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
