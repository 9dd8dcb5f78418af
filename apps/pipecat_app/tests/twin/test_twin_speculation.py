"""TwinService answering speculatively: an eager end of turn in a real pipecat pipeline.

The pipeline is pipecat's own user aggregator with ``EagerUserTurnStrategies``,
TwinService, and the assistant aggregator. The frames an eager STT sends
(``ProposedUserStartedSpeakingFrame``, ``EagerTranscriptionFrame``,
``EagerEndOfTurnCancelFrame``, ``TranscriptionFrame``,
``ProposedUserStoppedSpeakingFrame``) are sent into it as an STT would. The
experts are loopback servers on 127.0.0.1: one replays SSE streams, one drips
its answer slowly and notes when the client closed its stream.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from helpers.memory_db import query
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    Frame,
    FunctionCallInProgressFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    TranscriptionFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_turn_strategies import EagerUserTurnStrategies
from pipecat.utils.time import time_now_iso8601

from pipecat_app.metrics import REGISTRY
from pipecat_app.twin.service import TwinService
from pipecat_app.twin.toolbox import Tool, ToolBox, ToolContext

from .twin_turns import expert, loopback, make_twin, replay_server, sse

pytestmark = pytest.mark.anyio

QUESTION = "What is the capital of France?"
RECORDED = Path(__file__).resolve().parent.parent / "recorded"
TOOL_ROUND = RECORDED / "llama-server_native_tool_round1.sse"  # four current_time calls


LAG_S = 60.0


def speculations(outcome: str) -> float:
    return REGISTRY.get_sample_value("twin_speculations_total", {"outcome": outcome}) or 0.0


def transcript(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "", time_now_iso8601())


def eager(text: str) -> EagerTranscriptionFrame:
    return EagerTranscriptionFrame(text, "", time_now_iso8601())


class Heard(FrameProcessor):
    """Keeps what TwinService let through (the assistant aggregator swallows the answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)


async def converse(twin: TwinService, frames: list[Frame]) -> tuple[list[Frame], list[Frame]]:
    """``frames`` from an eager STT through aggregator, TwinService and assistant aggregator.

    Returns what left TwinService downstream, and what left the pipeline upstream.
    """
    heard = Heard()
    # pipecat withdraws a speculation, or ends a turn, that is still open after
    # 5 s; the frames here resolve theirs within 3 s, but under CI's load (suites
    # side by side on two cores) the event loop has lagged by more than the
    # difference, and a speculation withdrawn by the clock is answered twice.
    # Those timers are pipecat's, not what these tests are about.
    strategies = EagerUserTurnStrategies(speculation_timeout=LAG_S)
    user, assistant = LLMContextAggregatorPair(
        twin.context,
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=strategies, user_turn_stop_timeout=LAG_S
        ),
    )
    await twin.start()
    try:
        _, up = await run_test(
            Pipeline([user, *twin.processors(), heard, assistant]), frames_to_send=frames
        )
    finally:
        await twin.stop()
    return heard.frames, list(up)


def spoken(frames: list[Frame]) -> str:
    return "".join(f.text for f in frames if isinstance(f, LLMTextFrame))


def remembered(tmp_path: Path) -> list[tuple[str, str]]:
    """Every turn memory holds (make_twin's store, read after the twin stopped)."""
    return query(tmp_path / "memory.sqlite3", "SELECT role, text FROM memories ORDER BY id")


async def test_a_confirmed_speculation_is_spoken_once_from_the_answer_already_under_way(
    tmp_path: Path,
):
    confirmed = speculations("confirmed")
    with replay_server([sse("Paris", " is the capital.")]) as replay:
        twin = make_twin(tmp_path, [expert("a", replay.url)])
        down, _ = await converse(
            twin,
            [
                ProposedUserStartedSpeakingFrame(),
                eager(QUESTION),
                SleepFrame(sleep=0.5),  # the answer is under way, held
                transcript(QUESTION),
                ProposedUserStoppedSpeakingFrame(),
                SleepFrame(sleep=1.0),
            ],
        )
    assert len(replay.requests) == 1  # answered once, on the eager transcript
    assert sum(isinstance(f, LLMFullResponseStartFrame) for f in down) == 1
    assert spoken(down) == "Paris is the capital."
    assert [m["content"] for m in twin.context.get_messages()] == [QUESTION, spoken(down)]
    assert remembered(tmp_path) == [("user", QUESTION), ("assistant", "Paris is the capital.")]
    assert speculations("confirmed") - confirmed == 1


@dataclass
class Drip:
    """An expert sending ``words`` words, one every 0.1 s; the next requests get ``then``."""

    then: list[bytes]
    words: int = 100
    requests: list[dict[str, Any]] = field(default_factory=list)
    closed_at: float | None = None  # when the client closed the dripping stream
    closed: threading.Event = field(default_factory=threading.Event)


@contextmanager
def drip_server(then: list[bytes], words: int = 100) -> Iterator[tuple[Drip, str]]:
    state = Drip(then, words)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            state.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            body = [sse(" word", finish=False) for _ in range(state.words)]
            if len(state.requests) > 1:
                body = [state.then.pop(0)]
            try:
                for event in body:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    if len(state.requests) == 1:
                        time.sleep(0.1)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                state.closed_at = time.monotonic()
                state.closed.set()
                self.close_connection = True

    with loopback(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/v1"


async def test_a_withdrawn_speculation_says_nothing_closes_the_stream_and_changes_nothing(
    tmp_path: Path,
):
    withdrawn = speculations("withdrawn")
    with drip_server([sse("Paris.")]) as (drip, url):
        twin = make_twin(tmp_path, [expert("a", url)])
        state_before = twin.routing_state.__dict__.copy()
        withdrawn_at: list[float] = []

        down, _ = await converse(
            twin,
            [
                ProposedUserStartedSpeakingFrame(),
                eager("What is the"),
                # The expert is dripping its answer (after recall, whose sentence
                # encoder loads first: about 1.5 s here).
                SleepFrame(sleep=2.5),
                EagerEndOfTurnCancelFrame(),  # the user went on
                SleepFrame(sleep=0.5),
            ],
        )
        withdrawn_at.append(time.monotonic())
        assert drip.closed.wait(5)
    assert drip.closed_at is not None
    assert drip.closed_at < withdrawn_at[0]
    assert len(drip.requests) == 1
    assert not [f for f in down if isinstance(f, (LLMTextFrame, LLMFullResponseStartFrame))]
    assert twin.context.get_messages() == []
    assert twin.routing_state.__dict__ == state_before
    assert remembered(tmp_path) == []
    assert speculations("withdrawn") - withdrawn == 1


calls_run: list[str] = []


async def current_time(ctx: ToolContext, timezone: str = "UTC") -> str:
    """The current time in a timezone.

    Args:
        timezone: IANA time zone, e.g. Europe/Paris.
    """
    calls_run.append(timezone)
    return "12:00"


async def test_a_tool_call_inside_a_speculation_withdraws_it_and_the_confirmed_turn_runs_it(
    tmp_path: Path,
):
    tool_round = TOOL_ROUND.read_bytes()
    calls_run.clear()
    thrown = speculations("tool")
    with replay_server([tool_round, tool_round, sse("It is noon.")]) as replay:
        twin = make_twin(
            tmp_path,
            [expert("native", replay.url, tool_calls=True)],
            toolbox=ToolBox([Tool(current_time)]),
        )
        question = "What time is it in Tokyo?"
        down, up = await converse(
            twin,
            [
                ProposedUserStartedSpeakingFrame(),
                eager(question),
                SleepFrame(sleep=2.5),  # as long as the drip test's wait, for the same reason
                # The speculation wanted a tool: no tool ran, nothing was said.
                transcript(question),
                ProposedUserStoppedSpeakingFrame(),
                SleepFrame(sleep=1.5),
            ],
        )
    assert any(isinstance(f, EagerEndOfTurnCancelFrame) for f in up)
    assert speculations("tool") - thrown == 1
    # Asked three times: the speculation (withdrawn at its call), then the confirmed
    # turn's two rounds; its tool calls ran once, in the confirmed turn.
    assert len(replay.requests) == 3
    in_progress = [f for f in down if isinstance(f, FunctionCallInProgressFrame)]
    assert len(calls_run) == len(in_progress) == 4
    assert spoken(down).endswith("It is noon.")
    assert sum(isinstance(f, LLMFullResponseStartFrame) for f in down) == 1


async def test_a_speculation_confirmed_mid_answer_is_spoken_once_and_counted(tmp_path: Path):
    confirmed = speculations("confirmed")
    # Four seconds of dripping words, confirmed two seconds in: mid-answer
    # whether or not recall's sentence encoder had to load first (about 1.5 s).
    with drip_server([], words=40) as (drip, url):
        twin = make_twin(tmp_path, [expert("a", url)])
        down, _ = await converse(
            twin,
            [
                ProposedUserStartedSpeakingFrame(),
                eager(QUESTION),
                SleepFrame(sleep=2.0),
                transcript(QUESTION),
                ProposedUserStoppedSpeakingFrame(),
                SleepFrame(sleep=4.0),
            ],
        )
    assert len(drip.requests) == 1, [r["messages"][-1] for r in drip.requests]
    assert not drip.closed.is_set()
    assert spoken(down) == " word" * 40
    assert speculations("confirmed") - confirmed == 1
