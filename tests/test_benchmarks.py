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


def run_bench(script: str, out: Path, *args: str) -> None:
    """Run ``benchmarks/<script>`` with ``--out out`` and ``args``; fail with its stderr."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=900,  # a loaded machine: the twin bench alone may wait 600 s for its vectors
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_twin_overhead_benchmark_runs_and_writes_its_numbers(tmp_path: Path) -> None:
    run_bench("bench_twin.py", tmp_path, "--memories", "200", "--turns", "5")
    numbers = json.loads((tmp_path / "twin.json").read_text())
    assert (numbers["memories"], numbers["turns"]) == (200, 5)
    assert set(numbers["stages_ms"]) >= {"route", "embed", "recall", "context", "total"}
    assert set(numbers["stages_cpu_ms"]) == set(numbers["stages_ms"])


def test_recall_benchmark_runs_and_writes_recall_at_3_three_ways(tmp_path: Path) -> None:
    run_bench("bench_recall.py", tmp_path, "--distractors", "0", "--rounds", "1")
    numbers = json.loads((tmp_path / "recall.json").read_text())
    assert set(numbers["recall_at_3"]) == {"paraphrase", "lexical"}
    assert set(numbers["recall_at_3"]["paraphrase"]) == {"bm25", "vectors", "hybrid", "questions"}
    assert numbers["model"]["load_s"] > 0


def test_routing_benchmark_runs_and_writes_both_routers_figures(tmp_path: Path) -> None:
    run_bench("bench_routing.py", tmp_path, "--rounds", "1")
    numbers = json.loads((tmp_path / "routing.json").read_text())
    turns = numbers["embedding"]["test_turns"]
    assert turns > 0
    assert numbers["tfidf"]["test_turns"] == turns
    for encoder in ("embedding", "tfidf"):
        assert numbers["latency_ms"][encoder]["decisions"] == turns
    assert "test_accuracy" in numbers["old"] or "skipped" in numbers["old"]


def test_vision_benchmark_runs_and_writes_its_numbers(tmp_path: Path) -> None:
    run_bench("bench_vision.py", tmp_path, "--frames", "2", "--ocr-frames", "1", "--seconds", "3")
    numbers = json.loads((tmp_path / "vision.json").read_text())
    assert set(numbers) >= {"describe_without_ocr", "describe_with_ocr", "camera_loop_fps"}


def test_load_benchmark_runs_within_its_bounds_and_writes_its_numbers(tmp_path: Path) -> None:
    # Two turns per level, well within its time: each level ends at its turn budget.
    run_bench(
        "bench_load.py", tmp_path, "--clients", "1", "2", "--seconds", "60", "--max-turns", "2"
    )
    numbers = json.loads((tmp_path / "load.json").read_text())
    levels = numbers["levels"]
    assert [level["clients"] for level in levels] == [1, 2]
    for level in levels:
        assert level["turns"] == 2
        assert level["answered"] >= 1
        assert level["ttft_s"]["n"] >= 1
        assert level["app_rss_mb"]["max"] > 0
        assert level["app_cpu_cores"] > 0
        assert level["llama_busy"] > 0
        assert level["limit"] in {"llama-server", "the app", "the CPU", "nothing"}


def test_voice_benchmark_compares_with_the_bare_pipeline(tmp_path: Path) -> None:
    run_bench("bench_voice.py", tmp_path, "--turns", "2", "--paused", "0", "--compare", "bare")
    numbers = json.loads((tmp_path / "voice.json").read_text())
    bare = numbers["compare"]["bare"]
    assert numbers["turns_answered"] >= 1
    assert bare["turns_answered"] >= 1
    assert set(bare["latency_s"]) == set(numbers["latency_s"])
    verdict = bare["overhead"]
    assert verdict["twin_p50_s"] == numbers["latency_s"]["total"]["p50"]
    assert verdict["bare_p50_s"] == bare["latency_s"]["total"]["p50"]
