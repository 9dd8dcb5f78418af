"""Spoken round trips through the real voice pipeline with real models.

Piper speaks a question; the audio goes through Silero VAD, faster-whisper
tiny.en, TwinService with SmolLM2 on a real llama-server, and Piper again.
The answer must come from the model, not TwinService's fallback reply
(``assert_the_model_answered``).
"""

import asyncio
import re
import time
from collections.abc import Iterator

import numpy as np
import pytest
from helpers.llama_server import LlamaServer, tokens_predicted
from helpers.llm_skip import smollm2_server_or_skip
from helpers.speech import silence, synthesize

from app_helpers import assert_the_model_answered, expert_environ, turn_log, voice_session
from pipecat_app.config import DEMO_CONFIG, load_config
from pipecat_app.metrics import REGISTRY
from pipecat_app.twin.service import NO_EXPERT_REPLY

pytestmark = pytest.mark.slow


@pytest.fixture
def endless_llama(tmp_path) -> Iterator[LlamaServer]:
    """SmolLM2 on a llama-server started with ``--ignore-eos``: it never ends an answer
    early, so every answer is as long as the app's token cap (ExpertClient's
    ``max_tokens``, 256: about 190 words, over a minute of speech)."""
    log = tmp_path / "llama-server.log"
    with smollm2_server_or_skip(jinja=False, extra_args=["--ignore-eos"], log=log) as server:
        yield server


def voice_config(llama, tmp_path):
    environ = {
        **expert_environ(llama.base_url),
        "TWIN_APP__TWIN__MEMORY__PATH": str(tmp_path / "memory.sqlite3"),
        # The machine is shared: give a slow transcript time rather than end the turn.
        "TWIN_APP__VAD__TURN_STOP_TIMEOUT_S": "20",
    }
    return load_config(DEMO_CONFIG, environ=environ)


def words(text):
    return re.sub(r"[^a-z ]", "", text.lower()).split()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def answer_audio(transport, since, quiet_s=2.0, timeout=90.0):
    """The bot's audio after ``since``, once it has been quiet for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        after = [(t, a) for t, a in transport.received if t >= since]
        if after and time.time() - after[-1][0] > quiet_s:
            return b"".join(a for _, a in after)
        await asyncio.sleep(0.2)
    raise TimeoutError("no complete spoken answer")


def speech_seconds(pcm: bytes, sample_rate: int = 16000, threshold: int = 500) -> float:
    """Seconds from the start of ``pcm`` to its last sample louder than ``threshold``."""
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype=np.int16)) > threshold)
    return (int(loud[-1]) + 1) / sample_rate if loud.size else 0.0


def samples_count(stage):
    return REGISTRY.get_sample_value("twin_turn_stage_seconds_count", {"stage": stage}) or 0.0


def test_spoken_question_is_transcribed_and_answered_aloud(llama, tmp_path):
    config = voice_config(llama, tmp_path)
    question = synthesize("What is the capital of France?", config.tts)
    before = (samples_count("stt"), samples_count("tts_ttfb"))
    tokens_before = tokens_predicted(llama.url)

    async def talk():
        async with voice_session(config) as (session, transport):
            spoken = transport.say(silence(0.5) + question + silence(0.5))
            await spoken.done.wait()
            audio = await answer_audio(transport, since=spoken.started_at)
            return session.turn_metrics.turns[0], audio

    with turn_log() as logged:
        turn, audio = asyncio.run(talk())

    assert {"capital", "france"} <= set(words(turn.transcript)), turn.transcript
    answer = "".join(turn.answer)
    assert words(answer), "the expert gave no text"
    record = assert_the_model_answered(
        answer, tokens_predicted(llama.url) - tokens_before, lambda: logged
    )
    assert record["transcript"] == turn.transcript
    seconds = len(audio) / 2 / 24000
    assert seconds > 0.5, f"only {seconds:.2f}s of answer audio"
    assert rms(audio) > 300, "the answer audio is silent"
    assert turn.first_audio > turn.speech_end
    assert samples_count("stt") == before[0] + 1
    assert samples_count("tts_ttfb") == before[1] + 1


def test_user_speech_interrupts_the_spoken_answer(endless_llama, tmp_path):
    config = voice_config(endless_llama, tmp_path)
    question = synthesize(
        "Tell me a long story about a dragon who lives in the mountains.", config.tts
    )
    interruption = synthesize(
        "Wait, stop the story please. I want to ask you something different now.", config.tts
    )

    async def talk():
        async with voice_session(config) as (session, transport):
            spoken = transport.say(question + silence(0.5))
            await spoken.done.wait()
            deadline = time.monotonic() + 90
            while not any(t >= spoken.ended_at for t, _ in transport.received):
                assert time.monotonic() < deadline, "the bot never started answering"
                await asyncio.sleep(0.1)
            # Two seconds into the story: text enough to outlast the window below.
            await asyncio.sleep(2.0)
            barge = transport.say(interruption + silence(0.5))
            await barge.done.wait()
            return list(transport.received), barge, session.turn_metrics.turns[0]

    received, barge, story = asyncio.run(talk())

    # The story cannot end on its own (the server ignores end-of-sequence), so
    # its text stops where the interruption cut the generation. Even that part,
    # spoken by Piper in one go, would still be playing at the end of the
    # window checked below: a quiet bot there was cut off, not finished.
    said = "".join(story.answer)
    assert NO_EXPERT_REPLY not in said, "the story is the fallback reply"
    assert story.first_audio is not None, "the story was never spoken"
    spoken_until = story.first_audio + speech_seconds(synthesize(said, config.tts))
    assert spoken_until > barge.ended_at, (
        f"{len(words(said))} words generated before the interruption: the story would "
        f"have ended {barge.ended_at - spoken_until:.1f} s before the window did"
    )
    assert story.interrupted

    before = [t for t, _ in received if barge.started_at - 1.0 <= t < barge.started_at]
    assert before, "the bot was not talking when the user started"
    # VAD start (0.2 s of speech) plus the pipeline's reaction: by 2.5 s into
    # the user's sentence the bot has gone quiet and stays quiet while it lasts.
    during = [t for t, _ in received if barge.started_at + 2.5 <= t <= barge.ended_at]
    assert not during, f"the bot kept talking over the user ({len(during)} chunks)"
