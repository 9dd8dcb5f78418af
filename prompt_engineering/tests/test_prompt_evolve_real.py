"""A real short evolution: SmolLM2-135M on llama-server as both the mutating model and the
assistant, a handful of cases, two iterations then one more from the checkpoint.

The held-out comparison decides publishing. The target file starts out holding a
deliberately bad "current" prompt (longer than the model's 2048-token context, so
every held-out case gets no answer and scores 0): the first run must publish its
best prompt over it. The resumed run compares against what the first published;
its best is that same prompt, so it must publish nothing and say why. llama-server
samples with a fixed seed and OpenEvolve with temperature 0, so the runs repeat.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.evolve import LOSING_PROMPT, repeatable_smollm2
from helpers.llama_server import LlamaServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    with repeatable_smollm2(log) as server:
        yield server


def evolve(run_dir: Path, url: str, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "prompt_engineering.cli", "--run-dir", str(run_dir)]
    cmd += ["--assistant-url", url, "--publish-file", str(target)]
    cmd += ["--train-limit", "3", "--held-out-limit", "3", "--stage1-cases", "2"]
    cmd += ["--stage1-threshold", "0.2", "--max-tokens", "32", "--mutator-max-tokens", "160"]
    cmd += ["--concurrency", "1", "--temperature", "0", "--seed", "7", *extra]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run


def test_short_evolution_publishes_only_a_held_out_winner_and_resumes_its_count(smollm2, tmp_path):
    run_dir, target = tmp_path / "run", tmp_path / "published" / "system.md"
    target.parent.mkdir()
    target.write_text(LOSING_PROMPT)

    first = evolve(run_dir, smollm2.base_url, target, "--iterations", "2")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["iterations"] == 2
    assert (run_dir / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "evaluation (stage1)" in first.stdout
    assert "Iteration 2:" in first.stdout
    for line in ("baseline", "best"):
        assert f"  {line} " in first.stdout
    scores = report["scores"]
    assert scores["current_held_out"] == 0.0  # the bad prompt: no answer to any case
    assert scores["best"]["held_out"] > 0.0
    assert report["published"] is True, report["reason"]
    assert target.read_text().strip() == report["best_prompt"]
    meta = json.loads(target.with_name("system.md.meta.json").read_text())
    assert meta["version"] == 1
    assert meta["held_out_score"] == scores["best"]["held_out"]
    assert "published to file:" in first.stdout

    second = evolve(run_dir, smollm2.base_url, target, "--iterations", "1", "--resume")
    again = json.loads((run_dir / "report.json").read_text())
    assert "resuming from" in second.stdout
    assert again["iterations"] == 3  # the count goes on from the checkpoint
    assert again["published"] is False
    assert "not published: " in second.stdout
    assert again["reason"]
    assert target.read_text().strip() == report["best_prompt"]  # untouched
    assert json.loads(target.with_name("system.md.meta.json").read_text())["version"] == 1
