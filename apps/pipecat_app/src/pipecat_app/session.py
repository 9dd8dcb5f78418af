"""One conversation: a TwinService and the pipeline worker that runs around it.

``VoiceSession`` runs the spoken pipeline over any audio transport (WebRTC in
the app, the tests' in-memory audio transport). ``TextSession`` runs the typed
pipeline and answers ``ask(text)`` with the answer's text as it streams.

A text turn nobody waits for any more (its caller cancelled, or stopped
reading) is interrupted: an ``InterruptionFrame`` goes through the pipeline,
which cancels TwinService's running turn and closes the expert's stream. A
turn cut short because the session was closed raises :class:`SessionClosed`,
never an answer ended early.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    InterruptionWorkerFrame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
)
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from pipecat_app.config import AppConfig
from pipecat_app.pipeline import Twin, make_vad, text_pipeline, voice_pipeline
from pipecat_app.providers import make_stt, make_tts
from pipecat_app.turn_metrics import Turn, TurnMetricsObserver
from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.route_label import ROUTE_MESSAGE_TYPE, RouteLabel

if TYPE_CHECKING:
    from pipecat_app.twin import ClusterView

TwinFactory = Callable[[TwinConfig], Twin]

#: The ``type`` of the RTVI server message with a spoken turn's latency.
TURN_LATENCY_MESSAGE_TYPE = "twin-turn-latency"
#: Longest wait for an interrupted turn's frames to leave the pipeline.
INTERRUPT_WAIT_S = 5.0


class SessionClosed(Exception):
    """The conversation was closed (idle, client gone, server stopping) before the turn ended."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def twin_service(config: TwinConfig) -> Twin:
    """A TwinService with a cluster view of its own (imported late: the twin package is big)."""
    from pipecat_app.twin import TwinService

    return TwinService(config)


def shared_twins(config: TwinConfig) -> tuple[ClusterView, TwinFactory]:
    """One cluster view for the process, and a factory of TwinServices that read it.

    The caller starts the view before the first session and stops it after
    the last.
    """
    from pipecat_app.twin import ClusterView, TwinService

    cluster = ClusterView(config)
    return cluster, functools.partial(TwinService, cluster=cluster)


class _Session:
    """A pipeline worker run by its own runner, with the twin started around it."""

    def __init__(self, twin: Twin, observers: Sequence[BaseObserver], *, rtvi: bool) -> None:
        self.twin = twin
        self._rtvi = rtvi
        self._observers = list(observers)
        self.worker: PipelineWorker | None = None
        self._runner: WorkerRunner | None = None
        self._stopped = False

    def _make_worker(self, pipeline: object) -> PipelineWorker:
        self.worker = PipelineWorker(
            pipeline,  # type: ignore[arg-type]
            params=PipelineParams(enable_metrics=True),
            observers=self._observers,
            idle_timeout_secs=None,
            # RTVI: the browser client's protocol (bot ready, transcripts).
            enable_rtvi=self._rtvi,
        )
        return self.worker

    async def _run_worker(self) -> None:
        assert self.worker is not None
        if self._stopped:
            return
        await self.twin.start()
        try:
            if self._stopped:
                return
            self._runner = WorkerRunner(handle_sigint=False)
            await self._runner.add_workers(self.worker)
            await self._runner.run()
        finally:
            await self.twin.stop()

    async def stop(self) -> None:
        """End the conversation now (client gone, server shutting down)."""
        self._stopped = True
        if self._runner is not None:
            await self._runner.cancel(reason="session stopped")
        elif self.worker is not None:
            await self.worker.cancel(reason="session stopped")

    def idle_since(self) -> float | None:
        """Since when (``time.monotonic``) the conversation has had no turn; None mid-turn."""
        return None


class VoiceSession(_Session):
    """A spoken conversation over ``transport`` until it is stopped."""

    def __init__(
        self,
        config: AppConfig,
        transport: BaseTransport,
        *,
        twin_factory: TwinFactory = twin_service,
        observers: Sequence[BaseObserver] = (),
    ) -> None:
        self.turn_metrics = TurnMetricsObserver(voice=True, on_turn=self._heard)
        super().__init__(twin_factory(config.twin), [self.turn_metrics, *observers], rtvi=True)
        self.transport = transport
        self._sending: set[asyncio.Task[None]] = set()
        pipeline = voice_pipeline(
            transport,
            make_stt(config.stt),
            self.twin,
            make_tts(config.tts),
            make_vad(config.vad, config.stt),
            config.vad.turn_stop_timeout_s,
        )
        self._make_worker(pipeline)

    def _heard(self, turn: Turn) -> None:
        """Tell the client how soon the answer was heard, as an RTVI server message.

        ``{"type": "twin-turn-latency", "latency_ms": ...}``: the end of the
        user's speech to the answer's first audio (``TURN_LATENCY``), known
        once that audio has left, which may be after the routing label.
        """
        if turn.total_secs is None or self.worker is None:
            return
        message = {"type": TURN_LATENCY_MESSAGE_TYPE, "latency_ms": round(turn.total_secs * 1000)}
        task = asyncio.create_task(self.worker.rtvi.send_server_message(message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def run(self) -> None:
        """Run until the worker ends (client disconnected or :meth:`stop`)."""
        await self._run_worker()

    async def close(self, reason: str = "session closed") -> None:
        """End the conversation now (never for being idle: it ends when its peer leaves)."""
        logger.bind(event="voice_session_close").info(f"closing voice session: {reason}")
        await self.stop()


class _AnswerSink(FrameProcessor):
    """Hands the answer's text and routing label to the waiting ``ask``; passes every frame on.

    ``None`` in the queue means the session was closed; an ``InterruptionFrame``
    marks the end of an interrupted turn's frames.
    """

    def __init__(self) -> None:
        super().__init__(name="answer-sink")
        self.queue: asyncio.Queue[Frame | None] = asyncio.Queue()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(
            frame,
            LLMTextFrame
            | LLMFullResponseEndFrame
            | ErrorFrame
            | InterruptionFrame
            | RTVIServerMessageFrame,
        ):
            self.queue.put_nowait(frame)
        await self.push_frame(frame, direction)


class TextSession(_Session):
    """A typed conversation; ``ask`` one turn at a time."""

    def __init__(
        self,
        config: AppConfig,
        *,
        twin_factory: TwinFactory = twin_service,
        observers: Sequence[BaseObserver] = (),
        turn_timeout_s: float | None = None,
    ) -> None:
        self.turn_metrics = TurnMetricsObserver(voice=False)
        super().__init__(twin_factory(config.twin), [self.turn_metrics, *observers], rtvi=False)
        self._sink = _AnswerSink()
        self._make_worker(text_pipeline(self.twin, self._sink))
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Failover may try every expert in turn before an answer starts.
        experts = max(1, len(config.twin.experts))
        self._timeout = turn_timeout_s or config.twin.routing.expert_timeout_s * (experts + 1)
        self._turns = 0  # turns running or waiting for the one running
        self._idle_since = time.monotonic()
        self.closed_reason: str | None = None
        #: The routing label of the last turn an expert answered (None: no expert did).
        self.route: RouteLabel | None = None

    async def start(self) -> None:
        """Start the twin and the pipeline in the background."""
        self._task = asyncio.create_task(self._run_worker(), name="text-session")
        self._task.add_done_callback(
            lambda _task: self._closed("the conversation pipeline stopped")
        )

    def idle_since(self) -> float | None:
        """Since when (``time.monotonic``) no turn has run or waited; None mid-turn."""
        return None if self._turns else self._idle_since

    def _closed(self, reason: str) -> None:
        """Mark the session closed and wake the turn waiting for its answer."""
        if self.closed_reason is None:
            self.closed_reason = reason
            self._sink.queue.put_nowait(None)

    async def ask(self, text: str) -> AsyncIterator[str]:
        """Send one user turn; yields the answer's text pieces as they stream.

        Raises :class:`SessionClosed` when the session is closed before the
        answer ends, ``TimeoutError`` when the answer stalls, ``RuntimeError``
        on a fatal pipeline error. A turn left unfinished (the caller cancelled
        or closed the iterator, or an error above) is interrupted before the
        next one starts.
        """
        if self.worker is None or self._task is None:
            raise RuntimeError("TextSession.start() was not called")
        self._turns += 1
        try:
            async with self._lock:
                if self.closed_reason is not None:
                    raise SessionClosed(self.closed_reason)
                while not self._sink.queue.empty():
                    self._sink.queue.get_nowait()
                self.route = None
                await self.worker.queue_frame(
                    LLMMessagesAppendFrame(
                        messages=[{"role": "user", "content": text}], run_llm=True
                    )
                )
                ended = False
                try:
                    while True:
                        frame = await self._next_frame()
                        if isinstance(frame, LLMTextFrame):
                            yield frame.text
                        elif isinstance(frame, RTVIServerMessageFrame):
                            if frame.data.get("type") == ROUTE_MESSAGE_TYPE:
                                self.route = RouteLabel.model_validate(frame.data)
                        elif isinstance(frame, ErrorFrame):
                            logger.warning(f"turn error: {frame.error}")
                            if frame.fatal:
                                raise RuntimeError(frame.error)
                        elif isinstance(frame, LLMFullResponseEndFrame):
                            ended = True
                            return
                finally:
                    if not ended and self.closed_reason is None:
                        await self._interrupt()
        finally:
            self._turns -= 1
            self._idle_since = time.monotonic()

    async def _next_frame(self) -> Frame:
        try:
            frame = await asyncio.wait_for(self._sink.queue.get(), self._timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"no answer within {self._timeout:.0f}s") from exc
        if frame is None or self.closed_reason is not None:
            # A closed pipeline may end the turn's answer early: not an answer.
            raise SessionClosed(self.closed_reason or "session closed")
        return frame

    async def _interrupt(self) -> None:
        """Cancel the running turn (TwinService closes the expert's stream) and wait
        until its last frames have passed, so they cannot end the next turn."""
        assert self.worker is not None
        logger.bind(event="turn_interrupted").info("turn abandoned by its client: interrupting")
        await self.worker.queue_frame(InterruptionWorkerFrame(), FrameDirection.UPSTREAM)
        deadline = time.monotonic() + INTERRUPT_WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(self._sink.queue.get(), left)
            except TimeoutError:
                break
            if frame is None:
                self._sink.queue.put_nowait(None)
                break
            if isinstance(frame, InterruptionFrame):
                return
        logger.warning("the interrupted turn did not end within {:.0f}s", INTERRUPT_WAIT_S)

    async def answer(self, text: str) -> str:
        """The whole answer to one user turn."""
        return "".join([piece async for piece in self.ask(text)])

    async def close(self, reason: str = "session closed") -> None:
        """Stop the pipeline and the twin; a waiting turn gets :class:`SessionClosed`."""
        self._closed(reason)
        await self.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
