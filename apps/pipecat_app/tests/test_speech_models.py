"""The speech models are loaded once per process; every session's services share them.

Real models throughout (tiny.en, the bundled Piper voice, pipecat's Silero
and smart-turn files). The pipecat services and analyzers stay one per
session: only the models behind them are shared.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime
import pytest
from helpers.speech import silence, synthesize
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.services.piper.tts import PiperTTSService

from pipecat_app import speech_models
from pipecat_app.config import DEMO_CONFIG, AppConfig, PiperTTSConfig, load_config
from pipecat_app.pipeline import make_vad
from pipecat_app.providers import make_stt, make_tts
from pipecat_app.speech_models import (
    SharedPiperTTSService,
    SharedSileroVADAnalyzer,
    SharedSmartTurnAnalyzer,
)

RATE = 16000


@pytest.fixture(scope="module")
def config() -> AppConfig:
    return load_config(DEMO_CONFIG, environ={})


@pytest.fixture(scope="module")
def question(config: AppConfig) -> bytes:
    return synthesize("What is the capital of France?", config.tts)  # type: ignore[arg-type]


def test_every_session_gets_its_own_services_over_the_same_models(config):
    first = (make_stt(config.stt), make_tts(config.tts), make_vad(config.vad))
    second = (make_stt(config.stt), make_tts(config.tts), make_vad(config.vad))
    turns = (SharedSmartTurnAnalyzer(), SharedSmartTurnAnalyzer())

    for mine, theirs in [*zip(first, second, strict=True), turns]:
        assert mine is not theirs
    stt, tts, vad = first
    assert stt._model is second[0]._model  # type: ignore[attr-defined]
    assert tts._voice is second[1]._voice  # type: ignore[attr-defined]
    assert vad._model.session is second[2]._model.session  # type: ignore[attr-defined]
    assert turns[0]._session is turns[1]._session
    # The VAD's recurrent state is the analyzer's own.
    assert vad._model is not second[2]._model  # type: ignore[attr-defined]


def test_sessions_built_at_once_load_a_model_once(monkeypatch):
    loads = []
    real = onnxruntime.InferenceSession

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting)
    # A thread count no other test uses: a model this process has not loaded yet.
    cpu_count = 7
    assert not [k for k in speech_models.loaded() if k[0] == "smart-turn" and k[-1] == cpu_count]
    start = threading.Barrier(4)

    def build() -> onnxruntime.InferenceSession:
        start.wait()
        return speech_models.smart_turn_session(cpu_count)

    with ThreadPoolExecutor(4) as pool:
        sessions = list(pool.map(lambda _: build(), range(4)))

    assert len(loads) == 1, loads
    assert all(s is sessions[0] for s in sessions)


def test_shared_analyzers_and_tts_are_built_as_pipecats_own(config):
    """Their constructors are pipecat's without the load: every attribute is there."""
    tts_config = config.tts
    assert isinstance(tts_config, PiperTTSConfig)
    pairs = [
        (SileroVADAnalyzer(), SharedSileroVADAnalyzer()),
        (LocalSmartTurnAnalyzerV3(), SharedSmartTurnAnalyzer()),
        (
            PiperTTSService(
                download_dir=tts_config.resolved_voice_dir(),
                settings=PiperTTSService.Settings(voice=tts_config.voice),
            ),
            make_tts(tts_config),
        ),
    ]
    for theirs, mine in pairs:
        assert isinstance(mine, type(theirs))
        assert set(vars(mine)) == set(vars(theirs)), type(theirs).__name__
    piper, shared_piper = pairs[2]
    assert isinstance(shared_piper, SharedPiperTTSService)
    assert shared_piper._settings == piper._settings  # type: ignore[attr-defined]
    assert shared_piper._voice.config == piper._voice.config  # type: ignore[attr-defined]


def windows(pcm: bytes) -> list[bytes]:
    """Silero's 512-sample windows of 16-bit PCM."""
    step = 512 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]


def confidence(vad: SileroVADAnalyzer, window: bytes) -> float:
    return float(np.asarray(vad.voice_confidence(window)).squeeze())


def test_each_vad_keeps_its_own_state_and_hears_as_pipecats_own(question):
    speech = windows(silence(0.3) + question + silence(0.5))
    other = windows(silence(0.5) + question[::-1] + silence(0.5))

    def fresh(kind: type[SileroVADAnalyzer]) -> SileroVADAnalyzer:
        analyzer = kind(sample_rate=RATE)
        analyzer.set_sample_rate(RATE)
        return analyzer

    pipecats = fresh(SileroVADAnalyzer)
    expected = [confidence(pipecats, w) for w in speech]
    assert max(expected) > 0.9, "the question was not heard as speech"

    # Two sessions' VADs over the one model, their windows interleaved.
    mine, neighbour = fresh(SharedSileroVADAnalyzer), fresh(SharedSileroVADAnalyzer)
    heard = []
    for index, window in enumerate(speech):
        heard.append(confidence(mine, window))
        neighbour.voice_confidence(other[index % len(other)])

    assert heard == expected


def test_smart_turn_over_the_shared_session_judges_as_pipecats_own(question):
    audio = np.frombuffer(question + silence(0.5), dtype=np.int16).astype(np.float32) / 32768
    theirs = LocalSmartTurnAnalyzerV3(sample_rate=RATE)
    mine = SharedSmartTurnAnalyzer(sample_rate=RATE)
    assert mine._predict_endpoint(audio) == theirs._predict_endpoint(audio)


def test_a_missing_piper_voice_is_an_error_not_a_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nobody\.onnx"):
        make_tts(PiperTTSConfig(provider="piper", voice_dir=tmp_path, voice="nobody"))


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_a_long_sentence_does_not_keep_its_memory_in_the_shared_voice(config):
    voice = make_tts(config.tts)._voice  # type: ignore[attr-defined]
    # An answer without a full stop is one sentence to Piper: 40 s of speech.
    sentence = ", ".join(["and then the dragon flew over the mountains and the rivers"] * 14)
    list(voice.synthesize("The capital of France is Paris."))
    before = rss_mb()
    spoken = sum(len(chunk.audio_int16_bytes) for chunk in voice.synthesize(sentence))
    after = rss_mb()
    assert spoken / 2 / voice.config.sample_rate > 30
    # ONNX Runtime's arena kept about 800 MB after this sentence, for good.
    assert after - before < 150, f"{after - before:.0f} MB kept after the sentence"
