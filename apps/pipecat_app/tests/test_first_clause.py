"""An answer's first clause goes to Piper on its own, before the first sentence is complete."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    AggregatedTextFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_text_processor import LLMTextProcessor
from pipecat.tests.utils import run_test

from pipecat_app.config import DEMO_CONFIG, load_config
from pipecat_app.first_clause import FirstClauseAggregator
from pipecat_app.providers import make_tts

pytestmark = pytest.mark.anyio

ANSWER = [
    "The capital",
    " of France,",
    " a city of",
    " two million,",
    " is Paris.",
    " It is",
    " lovely.",
]


async def pieces(aggregator: FirstClauseAggregator, tokens: list[str]) -> list[str]:
    """What the aggregator releases for one answer, its flush included."""
    out = [a.text for token in tokens async for a in aggregator.aggregate(token)]
    rest = await aggregator.flush()
    return out + ([rest.text] if rest else [])


async def test_the_first_clause_goes_out_alone_then_sentences():
    aggregator = FirstClauseAggregator()
    assert await pieces(aggregator, ANSWER) == [
        "The capital of France,",
        "a city of two million, is Paris.",
        "It is lovely.",
    ]
    # The next answer starts with its own first clause again.
    assert await pieces(aggregator, ["Yes, it is", " in Europe,", " I think."]) == [
        "Yes, it is in Europe,",
        "I think.",
    ]


async def test_short_openings_numbers_and_times_do_not_end_a_clause():
    aggregator = FirstClauseAggregator()
    assert await pieces(aggregator, ["Well, 1,000 people came at 3:45 today."]) == [
        "Well, 1,000 people came at 3:45 today."
    ]
    assert await pieces(aggregator, ["Sure! Paris, the capital, is big."]) == [
        "Sure!",
        "Paris, the capital, is big.",
    ]


async def test_an_interruption_starts_the_next_answer_afresh():
    aggregator = FirstClauseAggregator()
    assert [a.text async for a in aggregator.aggregate("First of all, ")] == ["First of all,"]
    async for _ in aggregator.aggregate("this was cut"):
        pass
    await aggregator.handle_interruption()
    assert await pieces(aggregator, ["Here we go again, ", "fine."]) == [
        "Here we go again,",
        "fine.",
    ]


async def test_piper_speaks_the_first_clause_before_the_rest_of_the_sentence():
    tts = make_tts(load_config(DEMO_CONFIG, environ={}).tts)
    stage = Pipeline([LLMTextProcessor(text_aggregator=FirstClauseAggregator()), tts])
    frames = [LLMFullResponseStartFrame(), *map(LLMTextFrame, ANSWER), LLMFullResponseEndFrame()]
    down, _ = await run_test(stage, frames_to_send=frames)
    spoken = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert spoken == ["The capital of France,", "a city of two million, is Paris.", "It is lovely."]
    # Each piece was synthesized on its own: audio comes before the next piece's text.
    kinds = [type(f) for f in down if isinstance(f, (TTSAudioRawFrame, TTSTextFrame))]
    first_text = kinds.index(TTSTextFrame)
    assert TTSAudioRawFrame in kinds[:first_text]
    assert not [f for f in down if isinstance(f, (LLMTextFrame, InterruptionFrame))]
    assert not [f for f in down if type(f) is AggregatedTextFrame and not f.text]
