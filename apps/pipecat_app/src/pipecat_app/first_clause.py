"""Speak an answer's first clause as soon as it is written, not its first sentence.

Piper synthesizes what it is given as one piece, so TTS waits for pipecat's
sentence aggregator to release the first sentence before any audio is made;
an answer that opens with a long sentence ("The capital of France, a city of
two million people, is Paris.") is heard only once the whole sentence has
been generated. :class:`FirstClauseAggregator` is pipecat's
``SimpleTextAggregator`` that also releases the answer's first clause, at a
comma, semicolon or colon followed by a space once it has
:data:`MIN_CLAUSE_WORDS` words; the rest of the answer goes by sentences, as
before, so later pieces keep a sentence's intonation and Piper works ahead of
the audio being played.

The voice pipeline puts it in pipecat's ``LLMTextProcessor`` in front of
TTS, which then speaks each ``AggregatedTextFrame`` as it comes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

#: Words the first clause needs before a comma releases it ("Well," waits for more).
MIN_CLAUSE_WORDS = 3
#: Punctuation that ends a clause when a space follows ("1,000" and "3:45" do not).
CLAUSE_ENDS = ",;:"


class FirstClauseAggregator(SimpleTextAggregator):
    """Sentences, except that each answer's first clause is released as soon as it ends.

    Args:
        min_words: Words the first clause needs (:data:`MIN_CLAUSE_WORDS`).
        **kwargs: For ``SimpleTextAggregator`` (``language``...).

    An answer ends at ``flush`` (``LLMFullResponseEndFrame``), ``reset`` or an
    interruption; the next one again starts with its first clause.
    """

    def __init__(self, *, min_words: int = MIN_CLAUSE_WORDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._min_words = min_words
        self._released = False  # this answer's first piece has gone out

    def _clause_ended(self) -> bool:
        """Whether the buffer is a first clause just ended (by a space after its punctuation)."""
        text = self._text
        if len(text) < 2 or not text[-1].isspace() or text[-2] not in CLAUSE_ENDS:
            return False
        return len(text.split()) >= self._min_words

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        """The answer's first clause, then sentences as ``SimpleTextAggregator`` yields them."""
        if self._released or self._aggregation_type == TextType.TOKEN:
            async for aggregation in super().aggregate(text):
                self._released = True
                yield aggregation
            return
        for char in text:
            async for aggregation in super().aggregate(char):
                self._released = True
                yield aggregation
            if not self._released and self._clause_ended():
                clause = self._text.strip()
                await super().reset()
                self._released = True
                yield Aggregation(text=clause, type=TextType.SENTENCE)

    async def flush(self) -> Aggregation | None:
        """The rest of the answer; the next answer starts with its first clause again."""
        self._released = False
        return await super().flush()

    async def reset(self) -> None:
        """Clear the buffer; the next answer starts with its first clause."""
        self._released = False
        await super().reset()

    async def handle_interruption(self) -> None:
        """Drop the interrupted answer's text; the next one starts with its first clause."""
        self._released = False
        await super().handle_interruption()
