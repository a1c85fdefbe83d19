"""`make bench QUICK=1` runs to the end and reports every benchmark (its speed is not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPECTED = (
    "raw: consume + decode",
    "raw: COPY event rows",
    "faust worker ceiling",
    "ingest / faust worker ceiling",
    "ingest end to end",
    "ingest / raw limit",
    "ingest end to end, 2 worker processes",
    "peak RSS ingest worker",
    "peak RSS projector",
    "cost per detection (services + PostgreSQL)",
    "cost floor, no ticket logic",
    "append lock held",
    "publish -> visible p99",
    "projection rebuild",
    "API list (status+severity, 1 org) p99",
    "API get one ticket with events p99",
    "API dashboard counts p99",
    "API summary report, 30 days p99",
    "peak RSS API",
    "console first rows of the queue p95",
    "console 90-day report and trend p95",
    "publish -> row in an open queue p95",
)


@pytest.mark.timeout(300)
def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.runner", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"date", "machine", "python", "postgresql", "packages"} <= set(report["header"])
    names = [r["name"] for r in report["rows"]]
    for prefix in EXPECTED:
        assert any(n.startswith(prefix) for n in names), prefix
    for row in report["rows"]:
        assert row["min"] <= row["median"] <= row["max"] and row["median"] > 0, row
    assert "benchmark" in done.stdout and "median" in done.stdout  # the printed table
    assert "µs CPU per detection (service processes and PostgreSQL): ingest" in done.stdout
    assert "µs CPU per detection with no ticket logic" in done.stdout
    assert "ticket numbering waited for" in done.stdout  # the second lock a batch holds


@pytest.mark.timeout(120)
def test_only_runs_the_benchmarks_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.runner", "--quick", "--only", "latency", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = [r["name"] for r in json.loads(out.read_text())["rows"]]
    assert any(n.startswith("publish -> visible p99") for n in names), names
    # (the cheapest section: nothing else was run)
    assert not [n for n in names if n.startswith(("raw", "ingest", "cost", "append", "API", "console"))], (
        names
    )


@pytest.mark.timeout(150)
def test_the_probe_shows_where_an_ingest_run_spent_its_time() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.probe", "--detections", "3000", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [cpu] = [line for line in done.stdout.splitlines() if line.startswith("CPU s: ")]
    spent = dict(part.rsplit(" ", 1) for part in cpu.removeprefix("CPU s: ").split(", "))
    assert list(spent) == ["ingest 1", "ingest 2", "projector", "postgres"], cpu
    assert float(spent["postgres"]) > 0 and float(spent["ingest 1"]) + float(spent["ingest 2"]) > 0, cpu
    # The events were appended by COPY during the run, and pg_stat_statements saw it.
    assert any('COPY "events"' in line and " calls " in line for line in done.stdout.splitlines()), (
        done.stdout
    )
    assert "detections/s (3,000, 2 worker(s))" in done.stdout
