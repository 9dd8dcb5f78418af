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
"""

import time

import pytest
from helpers.llama_server import tokens_predicted
from helpers.speech import silence, synthesize, write_wav

from app_helpers import app_environ, assert_the_model_answered, free_port, start_app
from chromium_cdp import CHROMIUM, Chromium
from pipecat_app.config import PiperTTSConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps)"),
]


def heard_the_question(app) -> bool:
    """A turn transcribed the question.

    Chromium's fake microphone plays the WAV file in a loop from the moment the
    page opens it, so the first turn may begin mid-question (the connection
    comes up a little later); the next loop brings the whole question.
    """
    return any("capital" in t.get("transcript", "").lower() for t in app.turns())


@pytest.mark.parametrize("page", ["/", "/voice"], ids=["prebuilt_client", "voice_page"])
def test_browser_without_internet_speaks_over_webrtc_and_receives_the_spoken_answer(
    llama, tmp_path, page
):
    question = synthesize("What is the capital of France?", PiperTTSConfig(provider="piper"))
    wav = write_wav(
        tmp_path / "question.wav",
        silence(1.0) + question + silence(11.0 - len(question) / 32000),
    )
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
        deadline = time.monotonic() + 150
        heard = {}
        while time.monotonic() < deadline:
            heard = chromium.inbound_audio()
            if outside := chromium.requests_outside(app.url):
                pytest.fail(
                    f"the page asked for something outside the app: {outside}"
                    f"\nfailed: {chromium.failed}\npage: {chromium.console[-5:]}"
                )
            if heard["energy"] > 0 and heard_the_question(app):
                break
            time.sleep(1)
        else:
            pytest.fail(
                f"no spoken answer to the question: {heard}; turns: {app.turns()}"
                f"\npage: {chromium.console[-5:]}"
                f"\napp log tail:\n{app.logs()[-3000:]}"
            )
    finally:
        chromium.close()
        app.stop()

    assert heard["states"] == ["connected"]
    turns = app.turns()
    assert turns, "the app logged no answered turn"
    question = [t for t in turns if "capital" in t.get("transcript", "").lower()]
    assert question, turns
    assert_the_model_answered(
        question[-1]["answer"], tokens_predicted(llama.url) - tokens_before, app.turns
    )
    # A turn cut off before its first audio (the looping file's next question)
    # is logged without the time to it.
    assert all(t["total_s"] > 0 for t in turns if not t["interrupted"]), turns
