"""The assistant's pipelines, each read top to bottom as one list.

Voice: transport in -> Silero VAD -> STT -> user aggregator (turn taking,
barge-in) -> TwinService (routing, memory, tools, the expert LLM) -> TTS ->
transport out -> assistant aggregator.

The VAD runs in its own processor ahead of the STT rather than inside the
user aggregator: the segmenting STT then sees each "started speaking" in
order with the audio it belongs to. With the VAD in the aggregator (after the
STT) a busy CPU delays the VAD frames that travel back up to the STT by more
than the STT's one second of pre-roll, and the start of the utterance is lost.

Text: the same without audio: text arrives as a user message, the answer's
text frames go to a sink instead of a TTS.
"""

from __future__ import annotations

from typing import Protocol

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.aggregators.llm_text_processor import LLMTextProcessor
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.eager_end_of_turn_mixin import EagerEndOfTurnSTTServiceMixin
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import EagerUserTurnStrategies, UserTurnStrategies

from pipecat_app.config import STTConfig, VADConfig, WhisperSTTConfig
from pipecat_app.first_clause import FirstClauseAggregator


class Twin(Protocol):
    """TwinService as the app uses it (see ``pipecat_app.twin``).

    A pipeline takes its context and its stages; a session starts it before
    the pipeline runs and stops it after.
    """

    @property
    def context(self) -> LLMContext:
        """The conversation's context (turns and tools)."""
        ...

    def processors(self) -> list[FrameProcessor]:
        """The stages between the user aggregator and the TTS."""
        ...

    async def start(self) -> None:
        """Open memory (and follow the cluster, when the twin has its own view)."""
        ...

    async def stop(self) -> None:
        """Stop background work and close memory."""
        ...


def make_vad(config: VADConfig, stt: STTConfig | None = None) -> SileroVADAnalyzer:
    """Silero VAD with the configured thresholds (over the process's one Silero model).

    With ``stt.eager_end_of_turn`` the VAD stops at the STT's short pause
    (``stt.eager_pause_s``), where the STT guesses the turn's end.
    """
    # Imported here, as providers.py does: the text pipeline needs no speech models.
    from pipecat_app.speech_models import SharedSileroVADAnalyzer

    return SharedSileroVADAnalyzer(
        params=VADParams(
            confidence=config.confidence,
            start_secs=config.start_secs,
            stop_secs=stt.eager_pause_s
            if isinstance(stt, WhisperSTTConfig) and stt.eager_end_of_turn
            else config.stop_secs,
            min_volume=config.min_volume,
        )
    )


def voice_pipeline(
    transport: BaseTransport,
    stt: STTService,
    twin: Twin,
    tts: TTSService,
    vad: SileroVADAnalyzer,
    turn_stop_timeout_s: float = 5.0,
) -> Pipeline:
    """The spoken conversation; user speech interrupts the bot (barge-in).

    The user's turn ends when pipecat's default says so (smart-turn v3), with
    the process's one smart-turn model; or, with an STT that guesses the end
    of the turn (``stt.eager_end_of_turn``), when the STT says so, and the
    answer starts at its guess (``EagerUserTurnStrategies``, which replaces
    smart-turn). TTS speaks the answer's first clause as soon as it is
    written, then sentences (:class:`~pipecat_app.first_clause.FirstClauseAggregator`
    in pipecat's ``LLMTextProcessor``).
    """
    from pipecat_app.speech_models import SharedSmartTurnAnalyzer

    eager = isinstance(stt, EagerEndOfTurnSTTServiceMixin) and stt.eager_end_of_turn_enabled
    user, assistant = LLMContextAggregatorPair(
        twin.context,
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=EagerUserTurnStrategies()
            if eager
            else UserTurnStrategies(
                stop=[TurnAnalyzerUserTurnStopStrategy(turn_analyzer=SharedSmartTurnAnalyzer())]
            ),
            user_turn_stop_timeout=turn_stop_timeout_s,
        ),
    )
    return Pipeline(
        [
            transport.input(),
            VADProcessor(vad_analyzer=vad),
            stt,
            user,
            *twin.processors(),
            LLMTextProcessor(text_aggregator=FirstClauseAggregator()),
            tts,
            transport.output(),
            assistant,
        ]
    )


def text_pipeline(twin: Twin, sink: FrameProcessor) -> Pipeline:
    """The typed conversation: user messages in, the answer's text frames to ``sink``."""
    user, assistant = LLMContextAggregatorPair(twin.context)
    return Pipeline(
        [
            user,
            *twin.processors(),
            sink,
            assistant,
        ]
    )
