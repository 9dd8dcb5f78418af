"""A bare pipecat pipeline beside TwinService, for ``bench_voice.py --compare bare``.

:class:`BareTwin` puts pipecat's own ``OpenAILLMService`` where TwinService
goes in the app's voice pipeline: the session is the app's ``VoiceSession``
(``bare_session``), so the pipeline comes from the app's own factory
(``pipecat_app.pipeline.voice_pipeline``) with the same transport, Silero VAD,
STT, turn strategy (smart-turn, or the eager strategies with
``stt.eager_end_of_turn``), Piper and pipecat's standard context aggregators
(``LLMContextAggregatorPair``), and the config's first expert (the same
llama-server). The bare LLM gets the same system prompt and answer cap
(``routing.max_answer_tokens``); it has no recall, routing, tools or metrics:
that is what the comparison prices.

:func:`overhead` is the issue's verdict: TwinService may add no more than 5%
to the bare pipeline's p50, or no more than 40 ms, whichever is larger.
"""

from __future__ import annotations

from typing import Any

from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.base_transport import BaseTransport
from pipecat_app.config import AppConfig
from pipecat_app.session import VoiceSession
from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.prompt import load_default

#: TwinService may add this share of the bare p50 ...
ALLOWED_SHARE = 0.05
#: ... or this many seconds, whichever is larger.
ALLOWED_FLOOR_S = 0.040


class BareTwin:
    """The app's ``Twin`` protocol over pipecat's ``OpenAILLMService`` and nothing else."""

    def __init__(self, config: TwinConfig) -> None:
        if not config.experts:
            raise ValueError("the bare pipeline needs a static expert (twin.experts)")
        expert = config.experts[0]
        self.llm = OpenAILLMService(
            base_url=expert.base_url,
            api_key=expert.api_key or "none",
            settings=OpenAILLMService.Settings(
                model=expert.model,
                max_tokens=config.routing.max_answer_tokens,
                system_instruction=load_default(config.prompt),
            ),
        )
        self._context = LLMContext()

    @property
    def context(self) -> LLMContext:
        """The conversation's turns (the system prompt is the LLM service's)."""
        return self._context

    def processors(self) -> list[FrameProcessor]:
        """The one stage between the user aggregator and the TTS: the LLM."""
        return [self.llm]

    async def start(self) -> None:
        """Nothing to open: no memory, no cluster view."""

    async def stop(self) -> None:
        """Nothing to close."""


def bare_session(config: AppConfig, transport: BaseTransport, **session_args: Any) -> VoiceSession:
    """The app's voice session with :class:`BareTwin` in TwinService's place."""
    return VoiceSession(config, transport, twin_factory=BareTwin, **session_args)


def overhead(twin_p50_s: float, bare_p50_s: float) -> dict[str, float | bool]:
    """TwinService's p50 against the bare one's, and whether it meets the goal.

    ``added_s`` is TwinService's p50 minus the bare p50 (negative: faster);
    ``allowed_s`` is the larger of 5% of the bare p50 and 40 ms.
    """
    if bare_p50_s <= 0:
        raise ValueError(f"the bare p50 must be positive, not {bare_p50_s}")
    # To a tenth of a millisecond, as reported (no float noise at the boundary).
    added = round(twin_p50_s - bare_p50_s, 4)
    allowed = round(max(ALLOWED_SHARE * bare_p50_s, ALLOWED_FLOOR_S), 4)
    return {
        "twin_p50_s": round(twin_p50_s, 4),
        "bare_p50_s": round(bare_p50_s, 4),
        "ratio": round(twin_p50_s / bare_p50_s, 3),
        "added_s": added,
        "allowed_s": allowed,
        "met": added <= allowed,
    }
