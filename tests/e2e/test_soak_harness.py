"""`make soak`, scaled down: every service runs, the report has its intervals and every check
passes on a healthy pipeline (the memory check's failing side: tests/unit/test_soak_checks.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(240)
def test_a_short_soak_reports_intervals_and_passes_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.soak", "--minutes", "0.25", "--rate", "100",
         "--interval", "4", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=220,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["intervals"]) >= 3
    last = report["intervals"][-1]
    assert last["backlog"] == 0 and last["published"] == last["visible"] > 1000
    assert set(last["rss_mb"]) == {"ingest", "projector", "relay", "scheduler", "api"}
    assert [c["name"] for c in report["checks"]] == [
        "the backlog drained",
        "a ticket per distinct detection, none for a duplicate",
        "projector and relay at the head of the event store",
        "every malformed detection dead-lettered",
        "no service's memory kept growing",
    ]
    assert all(c["ok"] for c in report["checks"]), report["checks"]
