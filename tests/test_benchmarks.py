"""The benchmarks still run: each one, tiny, writes its JSON (no number is judged here).

``make bench`` is not part of ``make test``; without this, a renamed attribute
breaks a benchmark silently (it happened: ``TwinService.directory``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_twin_overhead_benchmark_runs_and_writes_its_numbers(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_twin.py"),
            "--out",
            str(tmp_path),
            "--memories",
            "200",
            "--turns",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    numbers = json.loads((tmp_path / "twin.json").read_text())
    assert (numbers["memories"], numbers["turns"]) == (200, 5)
    assert set(numbers["stages_ms"]) >= {"route", "recall", "context", "total"}
