"""pipecat's faster-whisper service with the decoding options a voice turn wants.

pipecat 1.14's ``WhisperSTTService`` calls ``WhisperModel.transcribe`` with
faster-whisper's defaults (beam search of 5, timestamps, temperature fallback)
and CTranslate2's default of 4 threads, and faster-whisper always runs the
encoder over a 30 s window, however short the speech. A spoken turn is one
short segment the VAD already cut, so:

- ``window = "fit"``: the encoder sees the segment rounded up to a second plus
  one second of padding, but at least ``fit_min_s`` (10 s: a 3 s question is
  encoded as 10 s instead of 30 s), decoded by CTranslate2's
  ``Whisper.generate`` directly, as CTranslate2's own Whisper example does.
  Shorter windows made tiny.en loop on one-word turns ("Yes. Yes. Yes. ..."),
  so a transcript that compresses like a loop (faster-whisper's own test,
  gzip ratio above 2.4) is transcribed again with the full window. Segments
  longer than 29 s take faster-whisper's path.
- one beam-search pass without timestamps and without temperature fallback.

``benchmarks/stt_settings.py`` measures both. The service also transcribes a
second of silence when the pipeline starts, so the first user turn does not
pay CTranslate2's first-call cost.

The model is the process's (``speech_models.whisper_model``): every session's
service transcribes with the one loaded for its settings.

:class:`EagerWhisperSTTService` (``stt.eager_end_of_turn``) also decides when
the user's turn ends, for pipecat's ``EagerUserTurnStrategies``: the VAD stops
at a short pause (``stt.eager_pause_s``), the turn so far is transcribed at
once and sent as an ``EagerTranscriptionFrame`` (the LLM starts answering,
held back), and the turn is committed (``TranscriptionFrame``,
``ProposedUserStoppedSpeakingFrame``) after ``stt.eager_hold_s`` more silence;
speech before then withdraws the guess (``EagerEndOfTurnCancelFrame``) and the
next pause transcribes the whole turn again. pipecat's mixin for such services
(``EagerEndOfTurnSTTServiceMixin``) sends the frames; pipecat has no segmenting
STT that predicts turn ends, so the timing is here.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, cast

import ctranslate2
import numpy as np
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.turns.eager_end_of_turn_mixin import EagerEndOfTurnSTTServiceMixin
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.types import assert_given, require_given

from pipecat_app.speech_models import whisper_model

WARM_UP_SECONDS = 1.0
SAMPLE_RATE = 16000  # what Whisper listens at (pipecat hands it 16 kHz PCM)
FRAMES_PER_SECOND = 100  # Whisper's mel frames (10 ms hop)
MAX_FIT_SECONDS = 29  # longer segments go through faster-whisper's 30 s windows
MAX_LENGTH = 448  # Whisper's longest token sequence
LOOP_COMPRESSION_RATIO = 2.4  # faster-whisper's compression_ratio_threshold


@dataclass(frozen=True)
class Piece:
    """One transcribed piece of a segment."""

    text: str
    no_speech_prob: float


@dataclass(frozen=True)
class DecodeOptions:
    """faster-whisper ``transcribe`` options (see ``config.WhisperSTTConfig``)."""

    window: str = "fit"
    fit_min_s: int = 10
    beam_size: int = 5
    timestamps: bool = False
    temperature_fallback: bool = False
    condition_on_previous_text: bool = False

    def transcribe_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``WhisperModel.transcribe``."""
        kwargs: dict[str, Any] = {
            "beam_size": self.beam_size,
            "without_timestamps": not self.timestamps,
            "condition_on_previous_text": self.condition_on_previous_text,
        }
        if not self.temperature_fallback:
            kwargs["temperature"] = 0.0
        return kwargs


class TunedWhisperSTTService(WhisperSTTService):
    """``WhisperSTTService`` with thread count, decoding options, a warm-up and a shared model.

    Args:
        cpu_threads: CTranslate2 threads (0: CTranslate2's own default).
        decode: Options for every transcription.
        warm_up: Transcribe silence once when the pipeline starts.
        **kwargs: ``WhisperSTTService`` arguments (device, compute_type, settings).
    """

    def __init__(
        self,
        *,
        cpu_threads: int = 0,
        decode: DecodeOptions | None = None,
        warm_up: bool = True,
        **kwargs: Any,
    ) -> None:
        # WhisperSTTService.__init__ loads the model through _load, which reads these.
        self._cpu_threads = cpu_threads
        self._decode = decode or DecodeOptions()
        self._warm_up = warm_up
        super().__init__(**kwargs)

    def _load(self) -> None:
        """Take the process's model for these settings (no download: a local path)."""
        model_name = require_given(self._settings.model, "Whisper model")
        self._model = whisper_model(
            model_name,
            device=self._device,
            compute_type=self._compute_type,
            cpu_threads=self._cpu_threads,
        )
        unsupported = self._unsupported_language()
        if unsupported:
            raise ValueError(unsupported)

    def _transcribe(self, audio: np.ndarray) -> list[Piece]:
        """Transcribe float32 16 kHz audio (runs in a worker thread)."""
        assert self._model is not None
        hotwords = assert_given(self._settings.hotwords)
        initial_prompt = assert_given(self._settings.initial_prompt)
        # Hotwords and prompts are faster-whisper's to place in the decoder prompt.
        fits = len(audio) <= MAX_FIT_SECONDS * SAMPLE_RATE and not (hotwords or initial_prompt)
        if self._decode.window == "fit" and fits:
            piece = self._transcribe_fitted(audio)
            if get_compression_ratio(piece.text) <= LOOP_COMPRESSION_RATIO:
                return [piece]
            logger.debug(f"{self}: fitted window looped ({piece.text[:60]!r}...), full window")
        segments, _ = self._model.transcribe(
            audio,
            language=cast("str | None", assert_given(self._settings.language)),
            hotwords=hotwords,
            initial_prompt=initial_prompt,
            **self._decode.transcribe_kwargs(),
        )
        return [Piece(s.text, s.no_speech_prob) for s in segments]

    def _transcribe_fitted(self, audio: np.ndarray) -> Piece:
        """One decoding pass with the encoder window fitted to the audio."""
        model = self._model
        assert model is not None
        language = cast("str | None", assert_given(self._settings.language)) or "en"
        tokenizer = Tokenizer(
            model.hf_tokenizer,
            model.model.is_multilingual,
            task="transcribe",
            language=language if model.model.is_multilingual else "en",
        )
        prompt = list(tokenizer.sot_sequence)
        if not self._decode.timestamps:
            prompt.append(tokenizer.no_timestamps)
        seconds = min(30, max(self._decode.fit_min_s, math.ceil(len(audio) / SAMPLE_RATE) + 1))
        features = pad_or_trim(model.feature_extractor(audio), seconds * FRAMES_PER_SECOND)
        result = model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[np.newaxis])),
            [prompt],
            beam_size=self._decode.beam_size,
            max_length=MAX_LENGTH,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        return Piece(tokenizer.decode(tokens), result.no_speech_prob)

    async def start(self, frame: StartFrame) -> None:
        """Start the service, then warm the model up off the event loop."""
        await super().start(frame)
        if self._warm_up and self._model is not None:
            started = asyncio.get_running_loop().time()
            silence = np.zeros(int(WARM_UP_SECONDS * SAMPLE_RATE), dtype=np.float32)
            await asyncio.to_thread(self._transcribe, silence)
            elapsed = asyncio.get_running_loop().time() - started
            logger.debug(f"{self}: whisper warmed up in {elapsed:.3f}s")

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe one segment of 16-bit PCM (as pipecat's service does, with our options)."""
        if not self._model:
            yield ErrorFrame("Whisper model not available")
            return

        await self.start_processing_metrics()
        audio_float = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        segments = await asyncio.to_thread(self._transcribe, audio_float)
        threshold = assert_given(self._settings.no_speech_prob)
        text = "".join(
            f"{piece.text} "
            for piece in segments
            if threshold is not None and piece.no_speech_prob < threshold
        )
        await self.stop_processing_metrics()

        if text:
            language = cast("Language | None", assert_given(self._settings.language))
            await self._handle_transcription(text, True, language)
            logger.debug(f"Transcription: [{text}]")
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language)


class EagerWhisperSTTService(EagerEndOfTurnSTTServiceMixin, TunedWhisperSTTService):
    """:class:`TunedWhisperSTTService` that guesses the end of the turn at a short pause.

    Pair it with ``EagerUserTurnStrategies`` and a VAD whose ``stop_secs`` is
    the short pause (see the module doc). The turn's audio is kept across the
    pauses inside it, so each guess, and the committed transcript, is the
    whole turn.

    Args:
        hold_s: Silence after the VAD's stop before the turn is committed.
        **kwargs: :class:`TunedWhisperSTTService` arguments.
    """

    def __init__(self, *, hold_s: float, **kwargs: Any) -> None:
        super().__init__(enable_eager_end_of_turn=True, **kwargs)
        self._hold_s = hold_s
        self._turn_audio = bytearray()  # the open turn's speech before its last pause
        self._turn_open = False
        self._stopped_at = 0.0  # when the VAD last said the user stopped
        self._commit: asyncio.Task[None] | None = None

    async def _handle_user_started_speaking(self, frame: VADUserStartedSpeakingFrame) -> None:
        await super()._handle_user_started_speaking(frame)
        if self._turn_open:  # the user went on: the guess, if one was made, is void
            await self._cancel_commit()
            await self._cancel_eager_end_of_turn()
            return
        self._turn_open = True
        await self.broadcast_frame(ProposedUserStartedSpeakingFrame)

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        self._user_speaking = False
        self._stopped_at = time.monotonic()
        self._turn_audio += self._audio_buffer
        self._audio_buffer.clear()
        if not self.is_usable:
            self._turn_audio.clear()
            return
        pcm = bytes(self._turn_audio) + self._trailing_silence()
        self._record_stt_audio_usage(pcm)
        await self.emit_stt_usage_metrics()
        await self._segment_queue.put(pcm)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe the turn so far; guess its end, and commit it after the hold."""
        async for frame in super().run_stt(audio):
            if not isinstance(frame, TranscriptionFrame):
                yield frame
                continue
            if self._user_speaking or not self._segment_queue.empty():
                return  # the user went on: the next pause transcribes the whole turn
            await self._push_eager_end_of_turn(
                frame.text, user_id=frame.user_id, language=frame.language
            )
            await self._cancel_commit()
            self._commit = self.create_task(self._commit_after_hold(frame), "eager-commit")
            return
        if not self._user_speaking and self._segment_queue.empty():
            # Nothing said (noise): close the turn without a transcript.
            await self._cancel_commit()
            self._commit = self.create_task(self._commit_after_hold(None), "eager-commit")

    async def _commit_after_hold(self, frame: TranscriptionFrame | None) -> None:
        await asyncio.sleep(max(0.0, self._stopped_at + self._hold_s - time.monotonic()))
        self._commit = None
        self._turn_open = False
        self._turn_audio.clear()
        self._clear_eager_end_of_turn()
        if frame is not None:
            await self.push_frame(frame)
        await self.broadcast_frame(ProposedUserStoppedSpeakingFrame)

    async def _cancel_commit(self) -> None:
        if self._commit is not None:
            task, self._commit = self._commit, None
            await self.cancel_task(task)
