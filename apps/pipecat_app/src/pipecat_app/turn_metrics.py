"""Turn latency: where the time between the user's last word and the answer goes.

An observer rather than processors in the pipeline list: the moments it times
are frames that cross the whole pipeline in both directions (VAD frames go up
to the STT and down to the LLM), and an observer sees every hop without adding
a queue of its own between the stages it measures.

Per turn, into :mod:`pipecat_app.metrics`:

- ``TURN_STAGE{stage="stt"}``: the VAD's end of speech decision to the transcript.
- ``llm_ttfb`` (logged and kept per turn, not observed here): the context
  leaving the user aggregator to the first LLM text (routing, recall and the
  expert's time to first token). ``TURN_STAGE{stage="llm_ttfb"}`` is observed
  by TwinService itself, per expert request, so it is not counted twice.
- ``TURN_STAGE{stage="tts_ttfb"}``: the TTS starting on the first sentence to its
  first audio.
- ``TURN_LATENCY``: the end of the user's speech (the VAD decision minus its
  ``stop_secs`` of silence) to the first audio of the answer; for text turns,
  the text arriving to the first text of the answer.

And one log line per turn (``event: turn``), once the answer has ended and
its timings are known (or it was interrupted): the transcript, the whole
answer, the expert that gave it, whether it was interrupted and the timings.
The expert's name comes with the answer's ``LLMFullResponseEndFrame``, in its
metadata under :data:`ANSWERED_BY` (TwinService puts it there); no name means
no expert answered: the words are TwinService's own fallback reply.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger
from pipecat.frames.frames import (
    EagerTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from pipecat_app.metrics import TURN_LATENCY, TURN_STAGE
from pipecat_app.twin.service import ANSWERED_BY


@dataclass
class Turn:
    """Timestamps (``time.time()``) of one turn and the durations derived from them."""

    speech_end: float | None = None
    vad_stop: float | None = None
    transcript_at: float | None = None
    transcript: str = ""
    llm_request: float | None = None
    first_text: float | None = None
    tts_started: float | None = None
    first_audio: float | None = None
    answer: list[str] = field(default_factory=list)
    answer_ended: bool = False
    expert: str | None = None
    interrupted: bool = False
    logged: bool = False

    @property
    def stt_secs(self) -> float | None:
        """Time from the VAD's stop decision to the transcript."""
        return _span(self.vad_stop, self.transcript_at)

    @property
    def llm_ttfb_secs(self) -> float | None:
        """Time from the LLM request to its first text."""
        return _span(self.llm_request, self.first_text)

    @property
    def tts_ttfb_secs(self) -> float | None:
        """Time from the TTS starting to its first audio."""
        return _span(self.tts_started, self.first_audio)

    @property
    def total_secs(self) -> float | None:
        """End of speech (or text turn) to the first audio (or text) of the answer."""
        start = self.speech_end if self.speech_end is not None else self.llm_request
        end = self.first_audio if self.speech_end is not None else self.first_text
        return _span(start, end)


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}s"


def _outcome(turn: Turn) -> str:
    """Who answered the turn and when, for the log line.

    A turn interrupted before its expert finished names no expert, as the
    fallback reply does; it is logged as interrupted, not as a fallback.
    """
    if turn.expert:
        interrupted = " (interrupted)" if turn.interrupted else ""
        return f"answered by {turn.expert} in {_secs(turn.total_secs)}{interrupted}"
    if turn.interrupted:
        return f"interrupted before an expert finished, after {_secs(turn.total_secs)}"
    return f"answered by no expert (the fallback reply) in {_secs(turn.total_secs)}"


class TurnMetricsObserver(BaseObserver):
    """Times each user turn and records it in the Prometheus metrics.

    Args:
        voice: True when the answer is spoken (the turn ends at the first TTS
            audio), False for text sessions (it ends at the first LLM text).
        on_turn: Called with each finished turn (the benchmark collects them).
        keep: How many finished turns to keep in ``turns``.
    """

    def __init__(
        self,
        *,
        voice: bool,
        on_turn: Callable[[Turn], None] | None = None,
        keep: int = 100,
    ) -> None:
        super().__init__()
        self._voice = voice
        self._on_turn = on_turn
        self._seen: set[int] = set()
        self._turn: Turn | None = None
        self._answering: Turn | None = None  # the turn whose answer is streaming
        self.turns: deque[Turn] = deque(maxlen=keep)

    async def on_push_frame(self, data: FramePushed) -> None:
        """Note the first sighting of each timed frame (frames are seen at every hop)."""
        frame = data.frame
        if frame.id in self._seen:
            return
        self._seen.add(frame.id)
        if len(self._seen) > 10_000:
            self._seen.clear()
        now = time.time()
        downstream = data.direction == FrameDirection.DOWNSTREAM
        if isinstance(frame, VADUserStoppedSpeakingFrame) and downstream:
            self._begin(Turn(speech_end=frame.timestamp - frame.stop_secs, vad_stop=now))
        elif (
            isinstance(frame, (TranscriptionFrame, EagerTranscriptionFrame))
            and self._turn
            and not self._turn.transcript
        ):
            self._turn.transcript_at = now
            self._turn.transcript = frame.text
        elif isinstance(frame, LLMContextFrame) and downstream:
            # A speculative context (stt.eager_end_of_turn) is the turn's request
            # too: a withdrawn one says nothing, and the next pause begins a turn.
            if self._turn is None or self._turn.llm_request is not None:
                self._begin(Turn())
            assert self._turn is not None
            self._turn.llm_request = now
            self._answering = self._turn
        elif isinstance(frame, LLMTextFrame) and self._turn and self._turn.llm_request:
            if self._turn.first_text is None:
                self._turn.first_text = now
                if not self._voice:
                    self._finish()
            if self._turn is not None:
                self._turn.answer.append(frame.text)
        elif isinstance(frame, TTSStartedFrame) and self._turn and self._turn.tts_started is None:
            self._turn.tts_started = now
        elif isinstance(frame, TTSAudioRawFrame) and self._turn and self._turn.first_text:
            if self._turn.first_audio is None:
                self._turn.first_audio = now
                self._finish()
        elif isinstance(frame, LLMFullResponseEndFrame) and downstream and self._answering:
            turn, self._answering = self._answering, None
            turn.answer_ended = True
            turn.expert = frame.metadata.get(ANSWERED_BY)
            self._log(turn)
        elif isinstance(frame, InterruptionFrame) and self._turn:
            self._turn.interrupted = True
            self._log(self._turn)

    def _begin(self, turn: Turn) -> None:
        self._turn = turn

    def _finish(self) -> None:
        turn = self._turn
        if turn is None:
            return
        for stage, value in (("stt", turn.stt_secs), ("tts_ttfb", turn.tts_ttfb_secs)):
            if value is not None:
                TURN_STAGE.labels(stage=stage).observe(value)
        if turn.total_secs is not None:
            TURN_LATENCY.observe(turn.total_secs)
        self.turns.append(turn)
        # Answer text keeps arriving after the first token: keep the turn
        # object, but a new user turn replaces it as the current one.
        if self._on_turn:
            self._on_turn(turn)
        self._log(turn)

    def _log(self, turn: Turn) -> None:
        """Log the turn once its answer has ended and its first audio (if any) is timed."""
        if turn.logged or not turn.answer_ended:
            return
        awaiting_audio = turn.first_text is not None and turn.first_audio is None
        if self._voice and awaiting_audio and not turn.interrupted:
            return
        turn.logged = True
        answer = "".join(turn.answer)
        logger.bind(
            event="turn",
            transcript=turn.transcript,
            answer=answer,
            expert=turn.expert,
            interrupted=turn.interrupted,
            stt_s=turn.stt_secs,
            llm_ttfb_s=turn.llm_ttfb_secs,
            tts_ttfb_s=turn.tts_ttfb_secs,
            total_s=turn.total_secs,
        ).info(f"turn {_outcome(turn)}: {turn.transcript!r} -> {answer!r}")
