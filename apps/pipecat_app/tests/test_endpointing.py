"""End of turn: a pause inside a sentence does not end the user's turn.

The real front of the voice pipeline (audio in, Silero VAD with the embedded
``[vad]`` settings, faster-whisper, the user aggregator with pipecat's
smart-turn model) hears Piper say a question with a pause in the middle. The
conversation stage after the aggregator only records the user turns it is
handed (no LLM is needed to decide where a turn ends).
"""

import asyncio
import re

import pytest
from helpers.speech import silence, split_between_words, synthesize
from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from app_helpers import voice_session
from pipecat_app.config import DEMO_CONFIG, load_config

pytestmark = pytest.mark.slow


class _TurnRecorder(FrameProcessor):
    """Keeps the user text of every context the user aggregator releases.

    ``speculative``: those of the contexts sent on a guessed end of turn
    (``stt.eager_end_of_turn``), which a confirmation keeps without a new context.
    """

    def __init__(self) -> None:
        super().__init__(name="turn-recorder")
        self.turns: list[str] = []
        self.speculative: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            users = [m for m in frame.context.get_messages() if m.get("role") == "user"]
            text = str(users[-1].get("content", "")) if users else ""
            (self.speculative if frame.speculation else self.turns).append(text)
        await self.push_frame(frame, direction)


class _ListeningOnly:
    """The conversation stage: records user turns, answers nothing."""

    def __init__(self) -> None:
        self.context = LLMContext()
        self.recorder = _TurnRecorder()

    def processors(self) -> list[FrameProcessor]:
        return [self.recorder]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


@pytest.mark.parametrize("eager", [False, True], ids=["smart-turn", "eager"])
@pytest.mark.parametrize("pause_s", [0.2])
def test_a_pause_inside_a_sentence_does_not_end_the_turn(tmp_path, pause_s, eager):
    config = load_config(
        DEMO_CONFIG,
        environ={
            "TWIN_APP__TWIN__MEMORY__PATH": str(tmp_path / "memory.sqlite3"),
            "TWIN_APP__VAD__TURN_STOP_TIMEOUT_S": "20",
            "TWIN_APP__STT__EAGER_END_OF_TURN": str(eager).lower(),
        },
    )
    sentence = synthesize("What is the capital city of France?", config.tts)  # type: ignore[arg-type]
    first, second = split_between_words(sentence, near=0.6)
    twin = _ListeningOnly()

    async def talk() -> list[str]:
        async with voice_session(config, twin_factory=lambda _: twin) as (_, transport):
            spoken = transport.say(silence(0.5) + first + silence(pause_s) + second + silence(1.0))
            await spoken.done.wait()
            # Smart-turn's own silence limit is 3 s; wait past it for a late second turn.
            deadline = asyncio.get_running_loop().time() + 20
            while not committed() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(4.0)
            return committed()

    def committed() -> list[str]:
        """The user turns the aggregator wrote into the context (both modes do)."""
        return [
            str(m.get("content")) for m in twin.context.get_messages() if m.get("role") == "user"
        ]

    turns = asyncio.run(talk())

    assert len(turns) == 1, f"the turn ended inside the sentence: {turns}"
    assert {"capital", "france"} <= set(words(turns[0])), turns
    if eager:  # the turn was answered at a guess, and the guess was the whole question
        assert twin.recorder.speculative, "no end of turn was guessed"
        assert not twin.recorder.turns
        assert words(twin.recorder.speculative[-1]) == words(turns[0])
    else:
        assert twin.recorder.turns == turns
