"""Speech services built from configuration: local models or OpenAI-compatible endpoints.

Each call builds new services for one pipeline; the local models behind them
are loaded once per process and shared (``speech_models``).
"""

from __future__ import annotations

from typing import Any

from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language

from pipecat_app.config import (
    OpenAISTTConfig,
    OpenAITTSConfig,
    PiperTTSConfig,
    STTConfig,
    TTSConfig,
    WhisperSTTConfig,
)

PIPER_STOP_TIMEOUT_S = 10.0


def make_stt(config: STTConfig) -> STTService:
    """Speech-to-text: faster-whisper in process, or an OpenAI-compatible endpoint."""
    if isinstance(config, WhisperSTTConfig):
        from pipecat_app.whisper_stt import (
            DecodeOptions,
            EagerWhisperSTTService,
            TunedWhisperSTTService,
        )

        eager: dict[str, Any] = {"hold_s": config.eager_hold_s} if config.eager_end_of_turn else {}
        service = EagerWhisperSTTService if config.eager_end_of_turn else TunedWhisperSTTService
        return service(
            **eager,
            device=config.device,
            compute_type=config.compute_type,
            cpu_threads=config.resolved_cpu_threads() if config.device == "cpu" else 0,
            decode=DecodeOptions(
                window=config.window,
                fit_min_s=config.fit_min_s,
                beam_size=config.beam_size,
                timestamps=config.timestamps,
                temperature_fallback=config.temperature_fallback,
                condition_on_previous_text=config.condition_on_previous_text,
            ),
            warm_up=config.warm_up,
            settings=TunedWhisperSTTService.Settings(
                model=str(config.resolved_model_dir()), language=Language(config.language)
            ),
        )
    if isinstance(config, OpenAISTTConfig):
        from pipecat.services.openai.stt import OpenAISTTService

        return OpenAISTTService(
            api_key=config.api_key.get_secret_value(),
            base_url=config.base_url,
            settings=OpenAISTTService.Settings(
                model=config.model, language=Language(config.language)
            ),
        )
    raise TypeError(f"unknown STT config {type(config).__name__}")


def make_tts(config: TTSConfig) -> TTSService:
    """Text-to-speech: Piper in process, or an OpenAI-compatible endpoint."""
    if isinstance(config, PiperTTSConfig):
        from pipecat_app.speech_models import SharedPiperTTSService, piper_voice

        return SharedPiperTTSService(
            voice=piper_voice(config.resolved_voice_dir() / f"{config.voice}.onnx"),
            settings=SharedPiperTTSService.Settings(voice=config.voice),
            # Piper yields a sentence's audio only once it is synthesized; on a
            # busy CPU that takes longer than the 3 s default, after which the
            # audio would be dropped as late.
            stop_frame_timeout_s=PIPER_STOP_TIMEOUT_S,
        )
    if isinstance(config, OpenAITTSConfig):
        from pipecat.services.openai.tts import OpenAITTSService

        return OpenAITTSService(
            api_key=config.api_key.get_secret_value(),
            base_url=config.base_url,
            settings=OpenAITTSService.Settings(model=config.model, voice=config.voice),
        )
    raise TypeError(f"unknown TTS config {type(config).__name__}")
