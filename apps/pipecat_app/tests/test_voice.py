"""Spoken round trips through the real voice pipeline with real models.

Piper speaks a question; the audio goes through Silero VAD, faster-whisper
tiny.en, TwinService with SmolLM2 on a real llama-server, and Piper again.
"""

import asyncio
import re
import time

import numpy as np
import pytest

from app_helpers import expert_environ
from pipecat_app.config import DEMO_CONFIG, load_config
from pipecat_app.metrics import REGISTRY
from pipecat_app.session import VoiceSession
from pipecat_app.synth import silence, synthesize
from pipecat_app.transports.audio_file import AudioFileTransport

pytestmark = pytest.mark.slow


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


def samples_count(stage):
    return REGISTRY.get_sample_value("twin_turn_stage_seconds_count", {"stage": stage}) or 0.0


def test_spoken_question_is_transcribed_and_answered_aloud(llama, tmp_path):
    config = voice_config(llama, tmp_path)
    question = synthesize("What is the capital of France?", config.tts)
    before = (samples_count("stt"), samples_count("tts_ttfb"))

    async def talk():
        transport = AudioFileTransport()
        session = VoiceSession(config, transport)
        run = asyncio.create_task(session.run())
        try:
            await asyncio.wait_for(transport.wait_started(), 60)
            spoken = transport.say(silence(0.5) + question + silence(0.5))
            await spoken.done.wait()
            audio = await answer_audio(transport, since=spoken.started_at)
            return session.turn_metrics.turns[0], audio
        finally:
            await session.stop()
            await asyncio.wait_for(run, 30)

    turn, audio = asyncio.run(talk())

    assert {"capital", "france"} <= set(words(turn.transcript)), turn.transcript
    answer = "".join(turn.answer).strip()
    assert words(answer), "the expert gave no text"
    seconds = len(audio) / 2 / 24000
    assert seconds > 0.5, f"only {seconds:.2f}s of answer audio"
    assert rms(audio) > 300, "the answer audio is silent"
    assert turn.first_audio > turn.speech_end
    assert samples_count("stt") == before[0] + 1
    assert samples_count("tts_ttfb") == before[1] + 1


def test_user_speech_interrupts_the_spoken_answer(llama, tmp_path):
    config = voice_config(llama, tmp_path)
    question = synthesize(
        "Tell me a long story about a dragon who lives in the mountains.", config.tts
    )
    interruption = synthesize(
        "Wait, stop the story please. I want to ask you something different now.", config.tts
    )

    async def talk():
        transport = AudioFileTransport()
        session = VoiceSession(config, transport)
        run = asyncio.create_task(session.run())
        try:
            await asyncio.wait_for(transport.wait_started(), 60)
            spoken = transport.say(question + silence(0.5))
            await spoken.done.wait()
            deadline = time.monotonic() + 90
            while not any(t >= spoken.ended_at for t, _ in transport.received):
                assert time.monotonic() < deadline, "the bot never started answering"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            barge = transport.say(interruption + silence(0.5))
            await barge.done.wait()
            return list(transport.received), barge, session.turn_metrics.turns[0]
        finally:
            await session.stop()
            await asyncio.wait_for(run, 30)

    received, barge, story = asyncio.run(talk())

    # Even the part of the story generated before the interruption (about 2.5
    # spoken words a second) runs past the window checked below: a quiet bot
    # there was cut off, not finished.
    said = words("".join(story.answer))
    if len(said) < 25:
        pytest.skip(f"SmolLM2 told a {len(said)}-word story: too short to show a cut-off")
    assert story.interrupted

    before = [t for t, _ in received if barge.started_at - 1.0 <= t < barge.started_at]
    assert before, "the bot was not talking when the user started"
    # VAD start (0.2 s of speech) plus the pipeline's reaction: by 2.5 s into
    # the user's sentence the bot has gone quiet and stays quiet while it lasts.
    during = [t for t, _ in received if barge.started_at + 2.5 <= t <= barge.ended_at]
    assert not during, f"the bot kept talking over the user ({len(during)} chunks)"
