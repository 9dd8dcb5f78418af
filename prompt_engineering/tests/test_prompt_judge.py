"""The optional LLM judge: its rating is read from the reply, reported as ``judge_score`` beside
the checks' score and never in it, and a judge that does not answer stops the run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers.evolve import repeatable_smollm2
from helpers.llama_server import LlamaServer
from helpers.ports import free_port

from prompt_engineering import evaluator
from prompt_engineering.judge import parse_rating
from prompt_engineering.settings import ENV, RunSettings
from test_prompt_publish import recording_expert


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("7", 0.7),
        ("Score: 8/10", 0.8),
        ("10", 1.0),
        ("0 - it uses a markdown list", 0.0),
        ("I'd say 3.5", None),  # not an integer rating
        ("11", None),
        ("A good reply.", None),
    ],
)
def test_judge_rating_is_the_first_integer_0_to_10_of_its_reply(reply, rating):
    assert parse_rating(reply) == rating


def test_a_judge_that_does_not_answer_stops_prompt_evolve_before_anything_is_scored(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with recording_expert() as (assistant, _):
        cmd = [sys.executable, "-m", "prompt_engineering.cli", "--run-dir", str(tmp_path)]
        cmd += ["--assistant-url", assistant, "--judge-url", dead, "--iterations", "1"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"the model endpoint {dead} does not answer" in run.stdout
    assert not (tmp_path / "report.json").exists()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Iterator[LlamaServer]:
    with repeatable_smollm2(tmp_path_factory.mktemp("llama") / "llama-server.log") as server:
        yield server


@pytest.mark.slow
def test_judge_score_is_reported_beside_the_checks_score_and_never_changes_it(
    smollm2, tmp_path, monkeypatch
):
    prompt = tmp_path / "prompt.md"
    prompt.write_text("You are Twin, a friendly voice assistant. Answer in one short sentence.")
    scores = {}
    # The first evaluation runs on llama-server's cold prompt cache and the
    # later ones on a warm one, and SmolLM2's greedy answers can differ
    # between the two; both compared runs come after a first, warm-up one.
    for judged in (False, False, True):
        settings = RunSettings(
            run_dir=tmp_path / f"run-{judged}",
            assistant_urls=[smollm2.base_url],
            mutator_url=smollm2.base_url,
            judge_url=smollm2.base_url if judged else None,
            max_tokens=32,
            stage1_cases=2,
            concurrency=1,
        )
        monkeypatch.setenv(ENV, str(settings.save()))
        scores[judged] = evaluator.evaluate_stage1(str(prompt)).metrics
    assert "judge_score" not in scores[False]
    assert 0.0 <= scores[True]["judge_score"] <= 1.0
    assert scores[True]["combined_score"] == scores[False]["combined_score"]
