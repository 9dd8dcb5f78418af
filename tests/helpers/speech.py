"""Spoken questions for the app's tests, the benchmarks and the browser's fake microphone.

Piper (the same local voice the assistant speaks with) turns text into 16-bit
mono PCM, resampled to the rate the pipeline listens at.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr
from pipecat_app.config import PiperTTSConfig


def synthesize(text: str, voice: PiperTTSConfig, sample_rate: int = 16000) -> bytes:
    """Speak ``text`` with the Piper voice; 16-bit mono PCM at ``sample_rate``."""
    from piper import PiperVoice

    model = PiperVoice.load(voice.resolved_voice_dir() / f"{voice.voice}.onnx")
    pcm = b"".join(chunk.audio_int16_bytes for chunk in model.synthesize(text))
    samples = np.frombuffer(pcm, dtype=np.int16)
    if model.config.sample_rate != sample_rate:
        samples = soxr.resample(samples, model.config.sample_rate, sample_rate)
    return np.asarray(samples, dtype=np.int16).tobytes()


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


def silence(seconds: float, sample_rate: int = 16000) -> bytes:
    """``seconds`` of digital silence as 16-bit mono PCM."""
    return b"\x00\x00" * int(seconds * sample_rate)


def write_wav(path: Path, pcm: bytes, sample_rate: int = 16000) -> Path:
    """Save 16-bit mono PCM as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return path
