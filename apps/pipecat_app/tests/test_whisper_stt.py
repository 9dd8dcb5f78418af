"""The tuned faster-whisper service with the real tiny.en model and Piper speech."""

import asyncio
import re

import numpy as np
import pytest
from helpers.speech import silence, synthesize
from pipecat.frames.frames import (
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.tests.utils import run_test

from pipecat_app.config import DEMO_CONFIG, WhisperSTTConfig, load_config
from pipecat_app.providers import make_stt
from pipecat_app.whisper_stt import DecodeOptions, TunedWhisperSTTService

RATE = 16000


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


def as_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def config() -> WhisperSTTConfig:
    stt = load_config(DEMO_CONFIG, environ={}).stt
    assert isinstance(stt, WhisperSTTConfig)
    return stt


@pytest.fixture(scope="module")
def question() -> bytes:
    tts = load_config(DEMO_CONFIG, environ={}).tts
    return synthesize("What is the capital of France?", tts)  # type: ignore[arg-type]


def service(config: WhisperSTTConfig, **changes: object) -> TunedWhisperSTTService:
    stt = make_stt(config.model_copy(update=changes))
    assert isinstance(stt, TunedWhisperSTTService)
    return stt


def test_fitted_window_hears_the_same_words_as_the_full_window(config, question):
    audio = as_float(silence(0.8) + question + silence(0.7))
    fitted = service(config, warm_up=False)._transcribe(audio)
    full = service(config, window="full", warm_up=False)._transcribe(audio)
    assert len(fitted) == 1
    assert {"capital", "france"} <= set(words(fitted[0].text)), fitted
    assert words(" ".join(p.text for p in full)) == words(fitted[0].text)
    assert fitted[0].no_speech_prob < 0.4


def test_silence_is_not_transcribed_as_speech(config):
    pieces = service(config, warm_up=False)._transcribe(np.zeros(2 * RATE, dtype=np.float32))
    # pipecat drops pieces whose no-speech probability reaches its threshold (0.4).
    assert all(not words(p.text) or p.no_speech_prob >= 0.4 for p in pieces), pieces


def test_a_turn_longer_than_29_seconds_goes_through_whisper_windows(config, question):
    long_turn = question + silence(29.0) + question
    pieces = service(config, warm_up=False)._transcribe(as_float(long_turn))
    heard = words(" ".join(p.text for p in pieces))
    assert heard.count("france") == 2, heard


def test_decode_options_turn_into_faster_whisper_arguments():
    fast = DecodeOptions(beam_size=1).transcribe_kwargs()
    assert fast == {
        "beam_size": 1,
        "without_timestamps": True,
        "condition_on_previous_text": False,
        "temperature": 0.0,
    }
    careful = DecodeOptions(
        beam_size=5, timestamps=True, temperature_fallback=True, condition_on_previous_text=True
    ).transcribe_kwargs()
    # No temperature: faster-whisper's own fallback ladder applies.
    assert careful == {
        "beam_size": 5,
        "without_timestamps": False,
        "condition_on_previous_text": True,
    }


class _Counting(TunedWhisperSTTService):
    """Counts transcriptions (the real model still runs)."""

    calls = 0

    def _transcribe(self, audio):
        type(self).calls += 1
        return super()._transcribe(audio)


def test_segment_between_vad_frames_becomes_one_final_transcript_after_a_warm_up(config, question):
    _Counting.calls = 0
    stt = _Counting(
        device="cpu",
        compute_type=config.compute_type,
        cpu_threads=config.resolved_cpu_threads(),
        decode=DecodeOptions(),
        warm_up=True,
        settings=_Counting.Settings(model=str(config.resolved_model_dir())),
    )
    audio = silence(0.5) + question + silence(0.2)
    chunk = RATE * 2 // 50  # 20 ms
    frames = [VADUserStartedSpeakingFrame()]
    frames += [
        InputAudioRawFrame(audio=audio[i : i + chunk], sample_rate=RATE, num_channels=1)
        for i in range(0, len(audio), chunk)
    ]
    frames.append(VADUserStoppedSpeakingFrame(stop_secs=0.2))

    down, _ = asyncio.run(run_test(stt, frames_to_send=frames, start_timeout=60.0))

    transcripts = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(transcripts) == 1
    assert transcripts[0].finalized
    assert {"capital", "france"} <= set(words(transcripts[0].text)), transcripts[0].text
    # One warm-up at start, one for the segment.
    assert _Counting.calls == 2


@pytest.mark.parametrize("answer", ["Yes.", "Stop."])
def test_a_one_word_turn_is_heard_once(config, answer):
    tts = load_config(DEMO_CONFIG, environ={}).tts
    audio = as_float(silence(0.8) + synthesize(answer, tts) + silence(0.7))  # type: ignore[arg-type]
    pieces = service(config, warm_up=False)._transcribe(audio)
    assert words(" ".join(p.text for p in pieces)) == words(answer)


class _FitCounting(TunedWhisperSTTService):
    """Counts fitted-window passes (the real model still runs)."""

    fitted = 0

    def _transcribe_fitted(self, audio):
        type(self).fitted += 1
        return super()._transcribe_fitted(audio)


def test_hotwords_go_through_faster_whisper_which_places_them(config, question):
    _FitCounting.fitted = 0
    settings = {"model": str(config.resolved_model_dir())}
    plain = _FitCounting(warm_up=False, settings=_FitCounting.Settings(**settings))
    biased = _FitCounting(
        warm_up=False, settings=_FitCounting.Settings(**settings, hotwords="Paris France")
    )
    audio = as_float(question + silence(0.5))
    assert {"capital", "france"} <= set(words(plain._transcribe(audio)[0].text))
    assert _FitCounting.fitted == 1
    heard = words(" ".join(p.text for p in biased._transcribe(audio)))
    assert {"capital", "france"} <= set(heard), heard
    assert _FitCounting.fitted == 1
