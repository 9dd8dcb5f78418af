"""The optional LLM judge: a model's rating of the answers, a separate score beside the checks.

The checks (:mod:`prompt_engineering.checks`) decide ``combined_score``; the
judge never does. With ``--judge-url`` the evaluator also asks a model to
rate each answered case from 0 to 10 for a spoken reply (answers the user,
short, no markup, declines what it should) and reports the mean rating / 10
as the metric ``judge_score`` (OpenEvolve keeps it with the other metrics
in its checkpoints; selection and the publishing decision ignore it). A
rating the judge's reply does not hold (no integer 0..10) is left out; a
case without an answer is not judged. A judge that does not answer stops
the run like a dead expert (:class:`~prompt_engineering.runner.EndpointDown`).

The request goes through the ``openai`` client pipecat and OpenEvolve
already use, with temperature 0 and a few tokens.
"""

from __future__ import annotations

import asyncio
import re

from openai import APIConnectionError, APIStatusError, AsyncOpenAI

from prompt_engineering.runner import EndpointDown
from prompt_engineering.scoring import CaseResult, SuiteResult

JUDGE_SYSTEM = (
    "You rate the replies of a voice assistant whose every word is read aloud. "
    "A good reply answers the user in one to three short sentences, uses no lists, "
    "markdown, emoji or links, and politely declines what is impossible or unsafe. "
    "Reply with one integer from 0 (useless) to 10 (perfect) and nothing else."
)

_RATING = re.compile(r"(?<![\d.])(10|[0-9])(?![\d.])")


def parse_rating(reply: str) -> float | None:
    """The first integer 0..10 in the judge's reply, as a fraction; None when there is none."""
    found = _RATING.search(reply)
    return int(found.group(1)) / 10 if found else None


def judge_request(case: CaseResult) -> str:
    """The user message asking for one rating of the case's conversation.

    The conversation is quoted and the question comes after it: asked the
    other way round, small models go on with the conversation instead.
    """
    lines = []
    for turn, answer in zip(case.case.turns, case.answers, strict=False):
        lines += [f"User: {turn}", f"Assistant: {answer}"]
    conversation = "\n".join(lines)
    return (
        f'Here is a conversation:\n"""\n{conversation}\n"""\n'
        "On a scale of 0 to 10, how good is the assistant's last reply for a voice "
        "assistant? Reply with a single number."
    )


async def judge_score(
    result: SuiteResult, base_url: str, model: str, *, concurrency: int = 2, timeout_s: float = 60
) -> float | None:
    """Mean rating of the answered cases of ``result`` (None when no rating was given)."""
    client = AsyncOpenAI(base_url=base_url, api_key="local-no-key", timeout=timeout_s)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def rate(case: CaseResult) -> float | None:
        async with gate:
            reply = await client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": JUDGE_SYSTEM},
                    {"role": "user", "content": judge_request(case)},
                ],
                max_tokens=8,
                temperature=0,
            )
        return parse_rating(reply.choices[0].message.content or "")

    try:
        ratings = await asyncio.gather(*(rate(c) for c in result.cases if c.answers))
    except (APIConnectionError, APIStatusError) as exc:
        raise EndpointDown(f"the judge {base_url} does not answer ({exc})") from exc
    finally:
        await client.close()
    given = [r for r in ratings if r is not None]
    return sum(given) / len(given) if given else None
