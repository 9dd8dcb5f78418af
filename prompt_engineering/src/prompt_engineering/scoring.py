"""Score one prompt on a set of cases: cases run concurrently up to a limit, each with a timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from prompt_engineering.checks import ToolCall, Verdict, run_check
from prompt_engineering.runner import Endpoint, EndpointDown, NoAnswer, run_case
from prompt_engineering.suite import Case


@dataclass
class CaseResult:
    """One case's checks: its score is the fraction passed (0 when it timed out)."""

    case: Case
    verdicts: list[Verdict] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: str = ""

    @property
    def score(self) -> float:
        if self.error or not self.verdicts:
            return 0.0
        return sum(v.passed for v in self.verdicts) / len(self.verdicts)

    def failure_text(self) -> str:
        """What went wrong, for the next mutation prompt (OpenEvolve artifacts)."""
        reasons = (
            [self.error]
            if self.error
            else [f"{v.kind}: {v.reason}" for v in self.verdicts if not v.passed]
        )
        said = self.answers[-1] if self.answers else ""
        return (
            f"[{self.case.id}] user: {self.case.turns[-1]!r} -> assistant: {said[:200]!r}; "
            + "; ".join(reasons)
        )


@dataclass
class SuiteResult:
    """A prompt's results on a set of cases."""

    cases: list[CaseResult]
    seconds: float

    @property
    def score(self) -> float:
        """Mean case score in [0, 1]."""
        return sum(c.score for c in self.cases) / len(self.cases) if self.cases else 0.0

    def check_rates(self) -> dict[str, float]:
        """Pass rate of each check kind, as ``check_<kind>``."""
        totals: dict[str, list[int]] = {}
        for result in self.cases:
            for verdict in result.verdicts:
                totals.setdefault(verdict.kind, []).append(int(verdict.passed))
        return {f"check_{k}": sum(v) / len(v) for k, v in sorted(totals.items())}

    @property
    def tool_use_rate(self) -> float:
        """Fraction of cases in which the assistant called a tool."""
        if not self.cases:
            return 0.0
        return sum(bool(c.tool_calls) for c in self.cases) / len(self.cases)

    def failures(self, limit: int = 12) -> str:
        """The failing cases, worst first, one line each."""
        failing = sorted((c for c in self.cases if c.score < 1.0), key=lambda c: c.score)
        return "\n".join(c.failure_text() for c in failing[:limit]) or "(every check passed)"


async def _one(
    prompt: str, case: Case, endpoint: Endpoint, gate: asyncio.Semaphore, timeout_s: float
) -> CaseResult:
    async with gate:
        try:
            transcript = await asyncio.wait_for(run_case(prompt, case, endpoint), timeout_s)
        except TimeoutError:
            return CaseResult(case, error=f"no answer within {timeout_s:.0f}s")
        except NoAnswer as exc:
            return CaseResult(case, error=str(exc))
    verdicts = [run_check(c.kind, transcript, c.args) for c in case.checks]
    return CaseResult(case, verdicts, transcript.answers, transcript.tool_calls)


async def score_prompt(
    prompt: str,
    cases: list[Case],
    endpoints: Endpoint | Sequence[Endpoint],
    *,
    concurrency: int = 2,
    case_timeout_s: float = 180.0,
) -> SuiteResult:
    """Run every case with ``prompt``; raises :class:`EndpointDown` when an endpoint is dead.

    With several endpoints (experts serving the same model) the cases go to them in turn.
    """
    pool = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
    started = time.monotonic()
    gate = asyncio.Semaphore(max(1, concurrency))
    tasks = [
        asyncio.create_task(_one(prompt, case, pool[i % len(pool)], gate, case_timeout_s))
        for i, case in enumerate(cases)
    ]
    try:
        results = await asyncio.gather(*tasks)
    except EndpointDown:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return SuiteResult(list(results), time.monotonic() - started)
