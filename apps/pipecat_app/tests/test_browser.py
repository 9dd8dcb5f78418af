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

import pytest
from helpers.llama_server import tokens_predicted

from app_helpers import (
    app_environ,
    assert_the_spoken_answer_came_from_the_model,
    free_port,
    hear_the_spoken_answer,
    question_wav,
    start_app,
)
from chromium_cdp import CHROMIUM, Chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps)"),
]


@pytest.mark.parametrize("page", ["/", "/voice"], ids=["prebuilt_client", "voice_page"])
def test_browser_without_internet_speaks_over_webrtc_and_receives_the_spoken_answer(
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
    finally:
        chromium.close()
        app.stop()

    assert_the_spoken_answer_came_from_the_model(
        app, heard, tokens_predicted(llama.url) - tokens_before
    )
