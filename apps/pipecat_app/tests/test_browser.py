"""A real browser talks to the demo over WebRTC and hears the assistant answer.

Debian's headless Chromium opens each of the app's voice pages (pipecat's
prebuilt client at ``/`` and the plain page at ``/voice``) with a fake
microphone that plays a spoken question from a WAV file in a loop (12 s: the
question, then silence for the answer). The test watches both ends: the app's
turn metrics and log say the question was transcribed and answered by the
model (llama-server generated tokens; the logged answer is not TwinService's
fallback reply and names the expert), and the page's WebRTC stats show audio
energy arriving from the app. This machine has no internet, and the page may
not ask for anything outside the app: home networks often have none either.

Each page also shows who answered (the routing label, an RTVI server
message): ``/voice`` in its conversation, beside the transcribed question and
the answer; the prebuilt client among its events.
"""

import itertools
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from helpers.llama_server import tokens_predicted

from app_helpers import (
    EXPERT,
    App,
    app_environ,
    assert_the_spoken_answer_came_from_the_model,
    expected_decision,
    free_port,
    hear_the_spoken_answer,
    question_wav,
    start_app,
)
from chromium_cdp import CHROMIUM, Chromium
from pipecat_app.twin.route_label import ROUTE_MESSAGE_TYPE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps)"),
]


@pytest.mark.parametrize("page", ["/", "/voice"], ids=["prebuilt_client", "voice_page"])
def test_browser_without_internet_speaks_over_webrtc_and_receives_the_spoken_answer_and_who_gave_it(
    llama, tmp_path, page
):
    wav = question_wav(tmp_path / "question.wav")
    env = app_environ(tmp_path, expert_url=llama.base_url)
    env["TWIN_APP__VAD__TURN_STOP_TIMEOUT_S"] = "20"
    app = start_app(env, tmp_path / "app.log")
    tokens_before = tokens_predicted(llama.url)
    chromium = Chromium(wav, tmp_path / "profile", free_port())
    try:
        chromium.open(f"{app.url}{page}")
        if page == "/":
            # The prebuilt client sets up its devices as it loads; a Connect
            # click before that has ended never connects (pipecat's
            # DailyMediaManager). A person takes longer than that to click.
            chromium.wait_for_console("[local media] microphone level observer running")
        chromium.click_button("connect")
        heard = hear_the_spoken_answer(chromium, app)
        if page == "/voice":
            assert_the_conversation_shows_who_answered_and_why(chromium, app, llama.base_url)
        else:
            assert_the_events_show_who_answered(chromium, app, llama.base_url)
    finally:
        chromium.close()
        app.stop()

    assert_the_spoken_answer_came_from_the_model(
        app, heard, tokens_predicted(llama.url) - tokens_before
    )


# The /voice page's conversation: each entry's kind (user, assistant), text and routing label.
CONVERSATION = """
[...document.querySelectorAll('#conversation .turn')].map((turn) => ({
  kind: turn.classList.contains('user') ? 'user' : 'assistant',
  text: turn.querySelector('.text').textContent,
  route: turn.querySelector('.route') ? turn.querySelector('.route').textContent : null,
  latency: turn.querySelector('.latency') ? turn.querySelector('.latency').textContent : null,
}))
"""


def assert_the_conversation_shows_who_answered_and_why(
    chromium: Chromium, app: App, expert_url: str, timeout: float = 30
) -> None:
    """``/voice`` shows the transcribed question, the logged answer, its label and latency."""
    deadline = time.monotonic() + timeout
    shown: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        shown = chromium.evaluate(CONVERSATION)
        for turn in app.turns():
            if "capital" not in turn["transcript"].lower() or turn["interrupted"]:
                continue
            decision = expected_decision(turn["transcript"], expert_url)
            label = (
                f"answered by {EXPERT} (general) on {urlsplit(expert_url).hostname}"
                f" · similarity {decision.score:.2f}"
            )
            for said, answer in itertools.pairwise(shown):
                if (
                    said["kind"] == "user"
                    and turn["transcript"].strip() in said["text"]
                    and answer["kind"] == "assistant"
                    and answer["text"] == turn["answer"]
                    and answer["route"] is not None
                    and answer["latency"] is not None
                ):
                    assert re.fullmatch(
                        re.escape(label) + r" · first words after \d+\.\d\d s", answer["route"]
                    ), (answer["route"], label)
                    # Every latency the app measured (TURN_LATENCY) is shown, once each.
                    assert_the_page_shows_each_measured_latency(chromium, app)
                    return
        time.sleep(1)
    raise AssertionError(
        f"the page shows no answered question with its label: {shown}; turns: {app.turns()}"
    )


def assert_the_page_shows_each_measured_latency(
    chromium: Chromium, app: App, timeout: float = 30
) -> None:
    """The page's latency notes are the app's ``twin_turn_latency_seconds`` observations.

    Compared as their count and sum (to the hundredth of a second each note shows).
    """
    deadline = time.monotonic() + timeout
    while True:
        notes = [t["latency"] for t in chromium.evaluate(CONVERSATION) if t["latency"]]
        values = [
            float(m[1])
            for note in notes
            if (m := re.fullmatch(r"heard (\d+\.\d\d) s after you stopped speaking", note))
        ]
        assert len(values) == len(notes), notes
        metrics = httpx.get(f"{app.url}/metrics", timeout=10).text
        count = _sample(metrics, "twin_turn_latency_seconds_count")
        total = _sample(metrics, "twin_turn_latency_seconds_sum")
        if len(values) == count:
            assert sum(values) == pytest.approx(total, abs=0.006 * count), (notes, total)
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the page shows {notes}; the app measured {count} turns")
        time.sleep(0.5)


def _sample(metrics: str, name: str) -> float:
    """The value of the sample ``name`` (no labels) in Prometheus text."""
    return next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(name + " "))


def assert_the_events_show_who_answered(chromium: Chromium, app: App, expert_url: str) -> None:
    """The prebuilt client lists the routing label among its events as a server message."""
    transcript = next(t["transcript"] for t in app.turns() if "capital" in t["transcript"].lower())
    decision = expected_decision(transcript, expert_url)
    shown = chromium.wait_for_text(f'Server message: {{"type":"{ROUTE_MESSAGE_TYPE}"', 30)
    line = next(
        x for x in shown.splitlines() if "Server message: " in x and ROUTE_MESSAGE_TYPE in x
    )
    label = json.loads(line.split("Server message: ", 1)[1])
    assert (label["expert"], label["domain"]) == (EXPERT, "general"), label
    assert label["node"] == urlsplit(expert_url).hostname, label
    assert (label["reason"], label["score"]) == (decision.reason, round(decision.score, 3)), label
