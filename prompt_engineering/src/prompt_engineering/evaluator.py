"""OpenEvolve's evaluator for TwinService's system prompt.

OpenEvolve loads this file by path and calls, for each candidate (the
"program" file holds the prompt's text):

- ``evaluate_stage1(path)``: a few training cases, so a bad prompt is
  rejected cheaply (cascade: below ``stage1_threshold`` it stops there);
- ``evaluate_stage2(path)``, the same as ``evaluate(path)``: the training set.

Each returns an ``EvaluationResult``: ``combined_score`` in [0, 1] (mean
case score), ``check_<kind>`` pass rates, the MAP-Elites features
``prompt_words`` and ``tool_use_rate``, and the failing cases as the
``failing_cases`` artifact, which OpenEvolve puts into the next mutation
prompt. With the run's ``judge_url``, also ``judge_score``: an LLM judge's
rating of the answers (:mod:`prompt_engineering.judge`), a separate score
that ``combined_score`` never includes. A candidate that is the mutating
model's thinking rather than a prompt scores 0 with the reason as the
``rejected`` artifact, without a case being run. A dead endpoint (or judge)
writes the run's ``fatal.txt`` (the CLI stops the run and prints it) and
raises: it is never a score.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from loguru import logger
from openevolve.evaluation_result import EvaluationResult

from prompt_engineering.candidate import rejection
from prompt_engineering.judge import judge_score
from prompt_engineering.runner import EndpointDown
from prompt_engineering.settings import RunSettings
from prompt_engineering.suite import load_cases, select

# The pipeline's DEBUG logs (every frame) would drown OpenEvolve's.
logger.remove()
logger.add(sys.stderr, level="WARNING")


def _record(settings: RunSettings, entry: dict[str, object]) -> None:
    with settings.progress_path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def _evaluate(program_path: str, stage: str) -> EvaluationResult:
    settings = RunSettings.from_env()
    prompt = Path(program_path).read_text(encoding="utf-8").strip()
    words = float(len(prompt.split()))
    if reason := rejection(prompt):
        _record(settings, {"stage": stage, "score": 0.0, "seconds": 0.0, "rejected": reason})
        return EvaluationResult(
            metrics={"combined_score": 0.0, "prompt_words": words, "tool_use_rate": 0.0},
            artifacts={"rejected": reason},
        )
    train = select(load_cases(settings.cases_dir), "train", settings.train_limit)
    cases = train[: settings.stage1_cases] if stage == "stage1" else train
    started = time.time()
    try:
        result = settings.score(prompt, cases)
    except EndpointDown as exc:
        settings.fatal_path.write_text(str(exc), encoding="utf-8")
        raise
    judged: dict[str, float] = {}
    if settings.judge_url:
        try:
            rating = asyncio.run(
                judge_score(
                    result,
                    settings.judge_url,
                    settings.judge_model,
                    concurrency=settings.concurrency,
                )
            )
        except EndpointDown as exc:
            settings.fatal_path.write_text(str(exc), encoding="utf-8")
            raise
        if rating is not None:
            judged["judge_score"] = rating
    _record(
        settings,
        {
            "stage": stage,
            **judged,
            "score": result.score,
            "seconds": result.seconds,
            "cases": len(cases),
            "at": started,
        },
    )
    return EvaluationResult(
        metrics={
            "combined_score": result.score,
            **result.check_rates(),
            "prompt_words": words,
            "tool_use_rate": result.tool_use_rate,
            "cases": float(len(cases)),
            "seconds": result.seconds,
            **judged,
        },
        artifacts={"failing_cases": result.failures()},
    )


def evaluate_stage1(program_path: str) -> EvaluationResult:
    """A few training cases: the cascade's cheap first stage."""
    return _evaluate(program_path, "stage1")


def evaluate_stage2(program_path: str) -> EvaluationResult:
    """The whole training set (the cascade's second stage)."""
    return _evaluate(program_path, "train")


def evaluate(program_path: str) -> EvaluationResult:
    """The whole training set (OpenEvolve's direct evaluation, without the cascade)."""
    return _evaluate(program_path, "train")
