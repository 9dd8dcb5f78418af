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
