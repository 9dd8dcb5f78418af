"""What one evolution run uses: endpoints, cases, limits and where its files go.

The CLI writes it as JSON into the run's directory and hands the path to
OpenEvolve's process (and so to the evaluator in OpenEvolve's workers)
through the environment variable :data:`ENV`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from prompt_engineering.runner import Endpoint
from prompt_engineering.scoring import SuiteResult, score_prompt
from prompt_engineering.suite import Case

#: Environment variable holding the path of the run's settings JSON.
ENV = "PROMPT_EVOLVE_SETTINGS"


class RunSettings(BaseModel):
    """One evolution run's settings (see the CLI's options for each)."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    assistant_urls: list[str]
    assistant_model: str = "smollm2-135m"
    assistant_tool_calls: bool = False
    mutator_url: str
    mutator_model: str = "smollm2-135m"
    mutator_max_tokens: int | None = None
    max_tokens: int = 96
    request_timeout_s: float = 60.0
    cases_dir: Path | None = None
    train_limit: int | None = None
    held_out_limit: int | None = None
    stage1_cases: int = 4
    stage1_threshold: float = 0.3
    concurrency: int = 2
    case_timeout_s: float = 180.0
    seed: int = 42
    temperature: float = 0.7
    judge_url: str | None = None
    judge_model: str = "smollm2-135m"

    @property
    def endpoints(self) -> list[Endpoint]:
        """The assistant's endpoints as the cases use them (in turn)."""
        return [
            Endpoint(
                base_url=url,
                model=self.assistant_model,
                max_tokens=self.max_tokens,
                timeout_s=self.request_timeout_s,
                tool_calls=self.assistant_tool_calls,
            )
            for url in self.assistant_urls
        ]

    def score(self, prompt: str, cases: list[Case]) -> SuiteResult:
        """Score ``prompt`` on ``cases`` with this run's experts, concurrency and case
        timeout (raises :class:`~prompt_engineering.runner.EndpointDown` like
        :func:`~prompt_engineering.scoring.score_prompt`)."""
        return asyncio.run(
            score_prompt(
                prompt,
                cases,
                self.endpoints,
                concurrency=self.concurrency,
                case_timeout_s=self.case_timeout_s,
            )
        )

    @property
    def path(self) -> Path:
        return self.run_dir / "settings.json"

    @property
    def fatal_path(self) -> Path:
        """Written by the evaluator when the endpoint is dead; the CLI stops the run on it."""
        return self.run_dir / "fatal.txt"

    @property
    def progress_path(self) -> Path:
        """One JSON line per evaluation (the CLI prints them)."""
        return self.run_dir / "evaluations.jsonl"

    def save(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return self.path

    @classmethod
    def from_env(cls) -> RunSettings:
        """The settings named by :data:`ENV` (a clear error when it is unset)."""
        try:
            path = os.environ[ENV]
        except KeyError:
            raise RuntimeError(
                f"{ENV} is not set: run the evaluator through `prompt-evolve` (make evolve)"
            ) from None
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
