"""Turn latency is split into STT, LLM first token and TTS first audio, and recorded.

Each turn is logged once its answer has ended: the answer and the expert that gave it.
"""

import asyncio

import pytest
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
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from app_helpers import turn_log
from pipecat_app import turn_metrics
from pipecat_app.metrics import REGISTRY
from pipecat_app.turn_metrics import TurnMetricsObserver
from pipecat_app.twin.service import ANSWERED_BY

DOWN, UP = FrameDirection.DOWNSTREAM, FrameDirection.UPSTREAM


class Clock:
    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(turn_metrics.time, "time", fake.time)
    return fake


def push(observer, clock, at, frame, direction=DOWN):
    clock.now = at
    processor = FrameProcessor()
    asyncio.run(observer.on_push_frame(FramePushed(processor, processor, frame, direction, 0)))


def stage(name, kind="count"):
    return REGISTRY.get_sample_value(f"twin_turn_stage_seconds_{kind}", {"stage": name}) or 0.0


def latency(kind="count"):
    return REGISTRY.get_sample_value(f"twin_turn_latency_seconds_{kind}") or 0.0


def audio():
    return TTSAudioRawFrame(audio=b"\x01\x00" * 240, sample_rate=24000, num_channels=1)


def answer_end(expert):
    """The end of an answer as TwinService sends it: the expert's name in its metadata."""
    frame = LLMFullResponseEndFrame()
    frame.metadata[ANSWERED_BY] = expert
    return frame


def test_voice_turn_runs_from_the_end_of_speech_to_the_first_audio(clock):
    observer = TurnMetricsObserver(voice=True)
    before = (stage("stt", "sum"), stage("tts_ttfb", "sum"), latency("sum"), latency())
    push(observer, clock, 100.0, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=100.0))
    push(observer, clock, 100.5, TranscriptionFrame("What time is it?", "", "t"))
    push(observer, clock, 100.6, LLMContextFrame(context=LLMContext()))
    push(observer, clock, 101.0, LLMTextFrame("It is"))
    push(observer, clock, 101.1, TTSStartedFrame())
    push(observer, clock, 101.2, LLMTextFrame(" noon."))
    push(observer, clock, 101.4, audio())
    push(observer, clock, 101.5, audio())

    (turn,) = observer.turns
    assert turn.transcript == "What time is it?"
    assert turn.stt_secs == pytest.approx(0.5)
    assert turn.llm_ttfb_secs == pytest.approx(0.4)
    assert turn.tts_ttfb_secs == pytest.approx(0.3)
    assert turn.total_secs == pytest.approx(1.6)
    assert "".join(turn.answer) == "It is noon."
    assert stage("stt", "sum") - before[0] == pytest.approx(0.5)
    assert stage("tts_ttfb", "sum") - before[1] == pytest.approx(0.3)
    assert latency("sum") - before[2] == pytest.approx(1.6)
    assert latency() - before[3] == 1


def test_an_eager_turn_is_timed_from_its_last_pause_and_a_withdrawn_guess_is_not_a_turn(clock):
    observer = TurnMetricsObserver(voice=True)
    # A guess at a pause inside the question, withdrawn: the gate lets nothing out.
    push(observer, clock, 100.0, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=100.0))
    push(observer, clock, 100.3, EagerTranscriptionFrame("What time", "", "t"))
    push(observer, clock, 100.3, LLMContextFrame(context=LLMContext(), speculation=True))
    # The end of the question: guessed, answered at once, confirmed, spoken.
    push(observer, clock, 101.0, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=101.0))
    push(observer, clock, 101.3, EagerTranscriptionFrame("What time is it?", "", "t"))
    push(observer, clock, 101.3, LLMContextFrame(context=LLMContext(), speculation=True))
    push(observer, clock, 101.4, TranscriptionFrame("What time is it?", "", "t"))
    push(observer, clock, 101.4, LLMTextFrame("Noon."))
    push(observer, clock, 101.6, TTSStartedFrame())
    push(observer, clock, 101.7, audio())

    (turn,) = observer.turns
    assert turn.transcript == "What time is it?"
    assert turn.stt_secs == pytest.approx(0.3)
    assert turn.llm_ttfb_secs == pytest.approx(0.1)
    assert turn.total_secs == pytest.approx(0.9)


def test_text_turn_ends_at_the_first_answer_text(clock):
    observer = TurnMetricsObserver(voice=False)
    before = latency("sum")
    push(observer, clock, 10.0, LLMContextFrame(context=LLMContext()))
    push(observer, clock, 10.7, LLMTextFrame("Hello"))
    (turn,) = observer.turns
    assert turn.total_secs == pytest.approx(0.7)
    assert turn.tts_ttfb_secs is None
    assert latency("sum") - before == pytest.approx(0.7)


def test_vad_and_context_copies_sent_upstream_do_not_start_turns(clock):
    observer = TurnMetricsObserver(voice=True)
    push(observer, clock, 5.0, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=5.0))
    push(observer, clock, 5.3, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=5.3), UP)
    push(observer, clock, 5.4, LLMContextFrame(context=LLMContext()), UP)
    push(observer, clock, 5.5, LLMContextFrame(context=LLMContext()))
    push(observer, clock, 5.9, LLMTextFrame("Hi"))
    push(observer, clock, 6.0, TTSStartedFrame())
    push(observer, clock, 6.2, audio())
    (turn,) = observer.turns
    assert turn.speech_end == pytest.approx(4.8)
    assert turn.llm_ttfb_secs == pytest.approx(0.4)
    assert turn.total_secs == pytest.approx(1.4)


def test_a_frame_seen_at_every_hop_counts_once(clock):
    observer = TurnMetricsObserver(voice=True)
    stop = VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=1.0)
    push(observer, clock, 1.0, stop)
    push(observer, clock, 3.0, stop)
    push(observer, clock, 3.1, LLMContextFrame(context=LLMContext()))
    push(observer, clock, 3.2, LLMTextFrame("Hi"))
    push(observer, clock, 3.3, TTSStartedFrame())
    push(observer, clock, 3.4, audio())
    (turn,) = observer.turns
    assert turn.vad_stop == pytest.approx(1.0)


def test_barge_in_marks_the_answer_interrupted(clock):
    observer = TurnMetricsObserver(voice=True)
    push(observer, clock, 1.0, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=1.0))
    push(observer, clock, 1.5, LLMContextFrame(context=LLMContext()))
    push(observer, clock, 1.8, LLMTextFrame("Once upon a time"))
    push(observer, clock, 1.9, TTSStartedFrame())
    push(observer, clock, 2.0, audio())
    push(observer, clock, 3.0, InterruptionFrame())
    assert observer.turns[0].interrupted


def test_text_turn_is_logged_when_its_answer_ends_with_the_answer_and_the_expert(clock):
    observer = TurnMetricsObserver(voice=False)
    with turn_log() as logged:
        push(observer, clock, 10.0, LLMContextFrame(context=LLMContext()))
        push(observer, clock, 10.7, LLMTextFrame("Paris is"))
        assert logged == [], "logged before the answer ended"
        push(observer, clock, 10.9, LLMTextFrame(" the capital."))
        push(observer, clock, 11.0, answer_end("general"))
        push(observer, clock, 11.1, answer_end("general"))  # a second end changes nothing
    (record,) = logged
    assert record["answer"] == "Paris is the capital."
    assert record["expert"] == "general"
    assert record["total_s"] == pytest.approx(0.7)
    assert record["message"] == "turn answered by general in 0.70s: '' -> 'Paris is the capital.'"


def test_voice_turn_is_logged_at_its_first_audio_when_the_answer_ended_before(clock):
    observer = TurnMetricsObserver(voice=True)
    with turn_log() as logged:
        push(observer, clock, 1.0, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=1.0))
        push(observer, clock, 1.3, TranscriptionFrame("Capital of France?", "", "t"))
        push(observer, clock, 1.4, LLMContextFrame(context=LLMContext()))
        push(observer, clock, 1.6, LLMTextFrame("Paris."))
        push(observer, clock, 1.7, answer_end("general"))
        push(observer, clock, 1.8, TTSStartedFrame())
        assert logged == [], "logged before the answer's first audio"
        push(observer, clock, 2.0, audio())
    (record,) = logged
    assert (record["transcript"], record["answer"]) == ("Capital of France?", "Paris.")
    assert record["expert"] == "general"
    assert record["tts_ttfb_s"] == pytest.approx(0.2)
    assert record["total_s"] == pytest.approx(1.2)
    assert not record["interrupted"]


def test_a_fallback_reply_is_logged_as_answered_by_no_expert(clock):
    observer = TurnMetricsObserver(voice=False)
    with turn_log() as logged:
        push(observer, clock, 1.0, LLMContextFrame(context=LLMContext()))
        push(observer, clock, 1.1, LLMTextFrame("Sorry."))
        push(observer, clock, 1.2, answer_end(None))
    (record,) = logged
    assert record["expert"] is None
    assert record["message"].startswith("turn answered by no expert (the fallback reply) ")


def test_an_answer_cut_off_before_its_audio_is_logged_as_interrupted(clock):
    observer = TurnMetricsObserver(voice=True)
    with turn_log() as logged:
        push(observer, clock, 1.0, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=1.0))
        push(observer, clock, 1.4, LLMContextFrame(context=LLMContext()))
        push(observer, clock, 1.6, LLMTextFrame("Once upon"))
        push(observer, clock, 1.7, InterruptionFrame())
        push(observer, clock, 1.8, answer_end("general"))
    (record,) = logged
    assert record["interrupted"]
    assert record["total_s"] is None
    assert record["answer"] == "Once upon"


def test_a_text_turn_interrupted_before_its_expert_finished_is_not_logged_as_a_fallback(clock):
    observer = TurnMetricsObserver(voice=False)
    with turn_log() as logged:
        push(observer, clock, 1.0, LLMContextFrame(context=LLMContext()))
        push(observer, clock, 1.2, LLMTextFrame("Once upon"))
        push(observer, clock, 1.3, InterruptionFrame())
        push(observer, clock, 1.4, answer_end(None))  # TwinService's end frame: no expert finished
    (record,) = logged
    assert record["interrupted"]
    assert record["expert"] is None
    assert record["message"].startswith("turn interrupted before an expert finished"), record[
        "message"
    ]
