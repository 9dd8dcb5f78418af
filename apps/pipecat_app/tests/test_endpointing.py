"""End of turn: a pause inside a sentence does not end the user's turn.

The real front of the voice pipeline (audio in, Silero VAD with the embedded
``[vad]`` settings, faster-whisper, the user aggregator with pipecat's
smart-turn model) hears Piper say a question with a pause in the middle. The
conversation stage after the aggregator only records the user turns it is
handed (no LLM is needed to decide where a turn ends).
"""

import asyncio
import re

import numpy as np
import pytest
from helpers.speech import silence, synthesize
from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from app_helpers import voice_session
from pipecat_app.config import DEMO_CONFIG, load_config

pytestmark = pytest.mark.slow


class _TurnRecorder(FrameProcessor):
    """Keeps the user text of every context the user aggregator releases."""

    def __init__(self) -> None:
        super().__init__(name="turn-recorder")
        self.turns: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            users = [m for m in frame.context.get_messages() if m.get("role") == "user"]
            self.turns.append(str(users[-1].get("content", "")) if users else "")
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


def split_between_words(pcm: bytes, near: float, rate: int = 16000) -> tuple[bytes, bytes]:
    """Cut one spoken sentence in the quietest 10 ms between its words nearest ``near``.

    Speaking the two halves as separate sentences would give the first half a
    sentence's falling end, which smart-turn rightly hears as a finished turn.
    """
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    hop = rate // 100
    rms = np.sqrt([np.mean(samples[i : i + hop] ** 2) for i in range(0, len(samples) - hop, hop)])
    loud = np.flatnonzero(rms > 500)
    inside = np.arange(loud[0] + 20, loud[-1] - 20)
    quiet = inside[rms[inside] < 150]
    assert quiet.size, "no gap between words found"
    cut = int(quiet[np.argmin(np.abs(quiet - near * len(rms)))]) * hop
    return pcm[: cut * 2], pcm[cut * 2 :]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


@pytest.mark.parametrize("pause_s", [0.2])
def test_a_pause_inside_a_sentence_does_not_end_the_turn(tmp_path, pause_s):
    config = load_config(
        DEMO_CONFIG,
        environ={
            "TWIN_APP__TWIN__MEMORY__PATH": str(tmp_path / "memory.sqlite3"),
            "TWIN_APP__VAD__TURN_STOP_TIMEOUT_S": "20",
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
            while not twin.recorder.turns and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(4.0)
            return list(twin.recorder.turns)

    turns = asyncio.run(talk())

    assert len(turns) == 1, f"the turn ended inside the sentence: {turns}"
    assert {"capital", "france"} <= set(words(turns[0])), turns
