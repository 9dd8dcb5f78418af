"""Experts that break mid-turn: garbled replies, and answers cut off mid-sentence.

Each expert here is a real HTTP server on 127.0.0.1 (``replay_server``). A
garbled reply (malformed events, plain JSON, an HTML page, an empty
stream...) is counted in ``EXPERT_ERRORS`` under its kind and logged, and a
second, healthy expert answers the same turn: the user never gets an empty or
cut-off answer for one. An answer that stops inside a sentence (the
connection drops) is ended with an ellipsis before the next expert goes on or
the apology comes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from pipecat_app.metrics import EXPERT_ERRORS, ROUTING_DECISIONS
from pipecat_app.twin.service import NO_EXPERT_REPLY, cut_off_ending

from .twin_turns import Reply, ask, expert, make_twin, replay_server, sse

pytestmark = pytest.mark.anyio

HEALTHY_ANSWER = "Lisbon is the capital of Portugal."

#: A whole (not streamed) chat completion, as a server ignoring ``stream`` sends it.
PLAIN_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Lisbon."},
                "finish_reason": "stop",
            }
        ],
    }
).encode()

GARBLED = {
    "malformed SSE": (b'data: {"choices": [{"index": 0, "delta": {"content": "Lis\n\n', "invalid"),
    "an event that is not a chunk": (b'data: {"status": "loading model"}\n\n', "invalid"),
    "a non-text content": (
        b'data: {"choices": [{"index": 0, "delta": {"content": [1, 2]}}]}\n\n',
        "invalid",
    ),
    "a tool call without an index": (
        b'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {}}]}}]}\n\n',
        "invalid",
    ),
    "plain JSON": (Reply(PLAIN_COMPLETION, "application/json"), "invalid"),
    "an HTML page": (
        Reply(b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
        "invalid",
    ),
    "an empty stream": (Reply(b""), "empty"),
    "a stream with nothing but [DONE]": (b"data: [DONE]\n\n", "empty"),
    "a stream that says nothing": (sse(" "), "empty"),
}


@pytest.fixture
def error_log() -> Iterator[list[str]]:
    """The app's ERROR log lines while the test runs."""
    lines: list[str] = []
    handle = logger.add(lambda m: lines.append(str(m)), level="ERROR", format="{message}")
    yield lines
    logger.remove(handle)


def errors(name: str, kind: str) -> float:
    return EXPERT_ERRORS.labels(expert=name, kind=kind)._value.get()


def failovers(name: str) -> float:
    return ROUTING_DECISIONS.labels(expert=name, reason="failover")._value.get()


@pytest.mark.parametrize(("reply", "kind"), GARBLED.values(), ids=GARBLED.keys())
async def test_a_garbled_reply_fails_over_in_the_same_turn_is_counted_and_logged(
    tmp_path: Path, error_log: list[str], reply: bytes | Reply, kind: str
):
    with replay_server([reply]) as garbled, replay_server([sse(HEALTHY_ANSWER)]) as healthy:
        twin = make_twin(
            tmp_path, [expert("a-garbled", garbled.url), expert("b-healthy", healthy.url)], 5
        )
        before, moved = errors("a-garbled", kind), failovers("b-healthy")
        await twin.start()
        try:
            answer = await ask(twin, "What is the capital of Portugal?")
        finally:
            await twin.stop()
    assert len(garbled.requests) == 1  # the garbled expert was asked first ...
    assert answer == HEALTHY_ANSWER  # ... and the healthy one answered the turn
    assert errors("a-garbled", kind) == before + 1
    assert failovers("b-healthy") == moved + 1
    assert twin.routing_state.expert == "b-healthy"
    assert any(line.startswith(f"twin: expert a-garbled: {kind}: ") for line in error_log)


async def test_a_stream_garbled_mid_answer_is_continued_by_the_next_expert(
    tmp_path: Path, error_log: list[str]
):
    cut = sse("The capital", " of Portugal", finish=False) + b"data: {garbage\n\n"
    with replay_server([cut]) as garbled, replay_server([sse(" is Lisbon.")]) as healthy:
        twin = make_twin(
            tmp_path, [expert("a-garbled", garbled.url), expert("b-healthy", healthy.url)], 5
        )
        before = errors("a-garbled", "invalid")
        await twin.start()
        try:
            answer = await ask(twin, "What is the capital of Portugal?")
        finally:
            await twin.stop()
    assert answer == "The capital of Portugal… is Lisbon."
    assert NO_EXPERT_REPLY not in answer
    assert errors("a-garbled", "invalid") == before + 1
    # The next expert was told what had been said, and asked to go on from there.
    said = healthy.requests[0]["messages"][-2:]
    assert said[0] == {"role": "assistant", "content": "The capital of Portugal…"}
    assert any("twin: expert a-garbled: invalid: undecodable stream" in line for line in error_log)


# -- answers cut off mid-sentence ------------------------------------------------------


async def test_an_answer_cut_off_mid_sentence_is_ended_before_the_apology(tmp_path: Path):
    dropped = Reply(sse("The story of", " the dragon", finish=False), drop=True)
    with replay_server([dropped]) as dying:
        twin = make_twin(tmp_path, [expert("a-dying", dying.url)], 5)
        before = errors("a-dying", "connect")
        await twin.start()
        try:
            answer = await ask(twin, "Tell me the story of the dragon.")
        finally:
            await twin.stop()
    assert answer == f"The story of the dragon… {NO_EXPERT_REPLY}"
    assert errors("a-dying", "connect") == before + 1


async def test_an_answer_cut_off_after_a_whole_sentence_is_not_ended_twice(tmp_path: Path):
    dropped = Reply(sse("Once upon a time.", finish=False), drop=True)
    with replay_server([dropped]) as dying:
        twin = make_twin(tmp_path, [expert("a-dying", dying.url)], 5)
        await twin.start()
        try:
            answer = await ask(twin, "Tell me the story of the dragon.")
        finally:
            await twin.stop()
    assert answer == f"Once upon a time. {NO_EXPERT_REPLY}"


async def test_an_answer_cut_off_mid_sentence_is_ended_before_the_next_expert_goes_on(
    tmp_path: Path,
):
    dropped = Reply(sse("The story of", " the dragon", finish=False), drop=True)
    with (
        replay_server([dropped]) as dying,
        replay_server([sse(" begins in a cave.")]) as healthy,
    ):
        twin = make_twin(tmp_path, [expert("a-dying", dying.url), expert("b-live", healthy.url)], 5)
        await twin.start()
        try:
            answer = await ask(twin, "Tell me the story of the dragon.")
        finally:
            await twin.stop()
    assert answer == "The story of the dragon… begins in a cave."
    assert healthy.requests[0]["messages"][-2]["content"] == "The story of the dragon…"
    assert twin.routing_state.expert == "b-live"


@pytest.mark.parametrize(
    ("text", "ending"),
    [
        ("The story of", "…"),
        ("Once upon a time, ", "…"),
        ("It was late.", ""),
        ("Really?!", ""),
        ('She said "stop."', ""),
        ("She said \u201cstop.\u201d", ""),
        ("It\u2019s", "…"),
        ("(as I said.)", ""),
        ("And then…", ""),
        ("   ", ""),
        ("", ""),
    ],
)
def test_a_cut_off_answer_is_ended_with_an_ellipsis_unless_it_ends_a_sentence(
    text: str, ending: str
):
    assert cut_off_ending(text) == ending
