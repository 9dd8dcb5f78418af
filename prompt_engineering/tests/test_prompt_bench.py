"""benchmarks/bench_evolve.py still runs: tiny, it writes its JSON (no number is judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.llm_skip import llama_server_bin_or_skip, smollm2_gguf_or_skip

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_evolve_benchmark_runs_and_writes_seconds_per_prompt(tmp_path):
    llama_server_bin_or_skip()
    smollm2_gguf_or_skip()
    bench = [sys.executable, str(ROOT / "benchmarks" / "bench_evolve.py"), "--out", str(tmp_path)]
    proc = subprocess.run(
        [*bench, "--cases", "2", "--max-tokens", "16", "--mutator-max-tokens", "16"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    numbers = json.loads((tmp_path / "evolve.json").read_text())
    assert numbers["cases"] == 2
    assert numbers["seconds_per_evaluated_prompt_full_suite"] > 0
