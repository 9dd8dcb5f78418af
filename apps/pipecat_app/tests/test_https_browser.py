"""A browser on another machine uses the microphone over HTTPS, and is told why not over HTTP.

Browsers give a page the microphone only in a secure context: HTTPS, or
localhost. Two network namespaces joined by a veth pair stand for the
assistant's machine (``APP_IP``) and a laptop on its network (``BROWSER_IP``):
the app and its llama-server run in the first, Debian's headless Chromium in
the second, and the page is reached at ``APP_IP``, never on a loopback
address, so no localhost rule makes it secure.

The app serves HTTPS with a certificate for ``APP_IP`` from a CA the test
makes (``helpers.tls.make_ca``); Chromium trusts that CA the way a user
would, in the NSS store under its ``$HOME`` (``chromium_cdp.trust_ca``,
NSS's certutil), not with ``--ignore-certificate-errors``. The app has an
access token: the prebuilt client gets its cookie from ``/?token=``, the
plain voice page from the login page, where the test types the token. The
fake microphone asks a question; the answer must come from the real model
on llama-server (``assert_the_model_answered``), spoken back over WebRTC.

The negative case: the same pages over plain HTTP at ``APP_IP`` say that the
browser refuses the microphone, with the hint to use HTTPS.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import netns
from helpers.llama_server import LlamaServer, tokens_predicted
from helpers.llm_skip import smollm2_server_or_skip
from helpers.nomad_task import in_netns
from helpers.tls import CertFiles, make_ca

from app_helpers import (
    App,
    app_environ,
    assert_the_model_answered,
    assert_the_spoken_answer_came_from_the_model,
    free_port,
    hear_the_spoken_answer,
    question_wav,
    start_app,
)
from chromium_cdp import CERTUTIL, CHROMIUM, Chromium, trust_ca

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps)"),
    pytest.mark.skipif(CERTUTIL is None, reason="certutil is not installed (libnss3-tools)"),
    pytest.mark.skipif(netns.available() is not None, reason=str(netns.available())),
]

APP_IP, BROWSER_IP = "10.79.0.1", "10.79.0.2"
TOKEN = "twin-test-7f3a9c"
REFUSED = "The browser refuses this page the microphone"


class Lan:
    """The assistant's machine and a laptop: two namespaces on one link."""

    def __init__(self, app: netns.Namespace, browser: netns.Namespace) -> None:
        self.app = app
        self.browser = browser

    def from_laptop(self, fn: Any) -> Any:
        """Call ``fn`` with its sockets on the laptop."""
        return in_netns(self.browser.name, fn)


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    with netns.Link.pair(APP_IP, BROWSER_IP) as (app, browser):
        yield Lan(app, browser)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"), address=APP_IP)


@pytest.fixture(scope="module")
def llama(lan) -> Iterator[LlamaServer]:
    """llama-server on the assistant's machine (its own loopback, as in ``make demo``)."""
    server = in_netns(
        lan.app.name, lambda: smollm2_server_or_skip(jinja=False, extra_args=["--metrics"])
    )
    yield server
    server.kill()


def generated(lan: Lan, llama: LlamaServer) -> float:
    return in_netns(lan.app.name, lambda: tokens_predicted(llama.url))


def serve_on_the_lan(lan: Lan, state: Path, env: dict[str, str], ca: Path | None = None) -> App:
    env["TWIN_APP__SERVER__HOST"] = APP_IP
    return in_netns(lan.app.name, lambda: start_app(env, state / "app.log", ca=ca))


@pytest.fixture(scope="module")
def https_app(lan, certs, llama, tmp_path_factory) -> Iterator[App]:
    """The app over HTTPS at APP_IP, with an access token, answered by llama-server."""
    state = tmp_path_factory.mktemp("https-app")
    env = app_environ(state, expert_url=llama.base_url)
    env.update(
        {
            "TWIN_APP__SERVER__TLS_CERT_FILE": str(certs.cert),
            "TWIN_APP__SERVER__TLS_KEY_FILE": str(certs.key),
            "TWIN_APP__SERVER__ACCESS_TOKEN": TOKEN,
            "TWIN_APP__VAD__TURN_STOP_TIMEOUT_S": "20",
        }
    )
    app = serve_on_the_lan(lan, state, env, ca=certs.ca)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def http_app(lan, tmp_path_factory) -> Iterator[App]:
    """The app over plain HTTP at APP_IP (no token: the page's own refusal is tested)."""
    state = tmp_path_factory.mktemp("http-app")
    app = serve_on_the_lan(lan, state, app_environ(state))
    yield app
    app.stop()


def chromium_on_the_laptop(lan: Lan, tmp_path: Path, certs: CertFiles | None) -> Chromium:
    """Chromium on the laptop, trusting the test CA when ``certs`` is given."""
    home = tmp_path / "home"
    home.mkdir()
    if certs is not None:
        trust_ca(home, certs.ca)
    wav = question_wav(tmp_path / "question.wav")
    return lan.from_laptop(lambda: Chromium(wav, tmp_path / "profile", free_port(), home=home))


def test_the_app_serves_https_and_the_api_needs_the_token_from_the_laptop(
    lan, https_app, certs, llama
):
    assert https_app.url == f"https://{APP_IP}:{https_app.url.rsplit(':', 1)[1]}"
    verify = ssl.create_default_context(cafile=certs.ca)

    def talk() -> dict[str, Any]:
        with httpx.Client(verify=verify, timeout=120) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(f"{https_app.url}/health", timeout=5)  # the system CAs only
            return {
                "health": client.get(f"{https_app.url}/health"),
                "metrics": client.get(f"{https_app.url}/metrics"),
                "no_token": client.post(f"{https_app.url}/api/chat", json={"text": "Hello"}),
                "wrong": client.post(
                    f"{https_app.url}/api/chat",
                    json={"text": "Hello"},
                    headers={"Authorization": "Bearer wrong"},
                ),
                "offer": client.post(
                    f"{https_app.url}/api/offer", json={"type": "offer", "sdp": "v=0"}
                ),
                "chat": client.post(
                    f"{https_app.url}/api/chat",
                    json={"text": "What is the capital of France?"},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ),
            }

    before = generated(lan, llama)
    replies = lan.from_laptop(talk)
    assert replies["health"].status_code == 200
    assert replies["metrics"].status_code == 403  # metrics_access "local": the laptop is not
    assert replies["no_token"].status_code == 401
    assert replies["no_token"].json()["detail"].startswith("access token missing")
    assert replies["wrong"].status_code == 401
    assert replies["wrong"].json()["detail"].startswith("access token wrong")
    assert replies["offer"].status_code == 401
    assert replies["chat"].status_code == 200, replies["chat"].text
    assert_the_model_answered(
        replies["chat"].json()["text"], generated(lan, llama) - before, https_app.turns
    )


@pytest.mark.parametrize("page", ["/", "/voice"], ids=["prebuilt_client", "voice_page"])
def test_a_browser_on_another_machine_talks_over_https_and_hears_the_model_answer(
    lan, https_app, certs, llama, tmp_path, page
):
    before = generated(lan, llama)
    chromium = chromium_on_the_laptop(lan, tmp_path, certs)
    try:
        if page == "/":
            # The prebuilt client cannot add a header: the cookie set from
            # ?token= goes with its /start and offers.
            chromium.open(f"{https_app.url}/?token={TOKEN}")
            chromium.wait_for_location("/client/")
            chromium.wait_for_console("[local media] microphone level observer running")
        else:
            chromium.open(f"{https_app.url}/voice")
            chromium.wait_for_location("/login")
            chromium.evaluate(f"document.getElementById('token').value = {TOKEN!r}")
            chromium.click_button("use token")
            chromium.wait_for_location("/voice")
        assert chromium.evaluate("window.isSecureContext") is True
        assert chromium.evaluate("location.host") == https_app.url.split("//")[1]
        chromium.click_button("connect")
        heard = hear_the_spoken_answer(chromium, https_app)
    finally:
        chromium.close()

    assert_the_spoken_answer_came_from_the_model(https_app, heard, generated(lan, llama) - before)


@pytest.mark.parametrize("page", ["/client/", "/voice"], ids=["prebuilt_client", "voice_page"])
def test_over_plain_http_on_another_machine_the_page_says_the_microphone_is_refused(
    lan, http_app, tmp_path, page
):
    chromium = chromium_on_the_laptop(lan, tmp_path, None)
    try:
        chromium.open(f"{http_app.url}{page}")
        shown = chromium.wait_for_text(REFUSED)
        assert chromium.evaluate("window.isSecureContext") is False
        if page == "/voice":
            chromium.click_button("connect")  # says it again rather than failing silently
            shown = chromium.wait_for_text(REFUSED)
            assert chromium.inbound_audio()["pcs"] == 0, "it offered a connection without audio"
    finally:
        chromium.close()

    assert f"{http_app.url} is not a secure context" in shown
    assert "Open the assistant over HTTPS" in shown
