"""The HTTP server as Nomad runs it: health, metrics, the browser client, SIGTERM."""

import json
import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipecat_app.metrics import REGISTRY


def test_health_reports_ok_and_session_counts_with_each_kind_s_cap(app):
    response = httpx.get(f"{app.url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    # "max" is the voice cap (server.max_sessions), "max_text" the text one.
    assert body["sessions"] == {"voice": 0, "text": 0, "max": 4, "max_text": 16}


def test_metrics_serves_every_twin_metric_in_prometheus_format(app):
    response = httpx.get(f"{app.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    expected = {family.name for family in REGISTRY.collect()}
    assert expected <= set(families)
    assert "twin_turn_stage_seconds" in families
    # The session gauges are there by kind before any session has opened.
    active = {s.labels["kind"]: s.value for s in families["twin_sessions_active"].samples}
    assert active == {"voice": 0.0, "text": 0.0}
    assert "twin_sessions_rejected" in families


def test_root_redirects_to_the_prebuilt_voice_client(app):
    response = httpx.get(f"{app.url}/", follow_redirects=True)
    assert response.status_code == 200
    assert str(response.url).endswith("/client/")
    assert "<title>Pipecat UI</title>" in response.text


def test_the_voice_page_enables_connect_only_once_its_click_is_handled(app):
    # The button is in the HTML before the module script (and its imports) has
    # loaded; enabled from the start, an early click did nothing (CI saw it:
    # the browser test's page never made a peer connection).
    page = httpx.get(f"{app.url}/voice").text
    assert re.search(r'<button id="connect"[^>]*\bdisabled\b', page), "Connect starts enabled"
    script = page[page.index('<script type="module">') : page.index("</script>")]
    handled = script.index('connectButton.addEventListener("click"')
    # The script's last statement enables it, after the click handler is attached.
    assert script.rstrip().endswith("connectButton.disabled = false;"), script[-300:]
    assert script.rindex("connectButton.disabled = false;") > handled


def test_start_hands_out_a_session_for_the_offer(app):
    response = httpx.post(f"{app.url}/start", json={"transport": "webrtc"})
    assert response.status_code == 200
    session_id = response.json()["sessionId"]
    unknown = httpx.post(
        f"{app.url}/sessions/not-{session_id}/api/offer", json={"sdp": "x", "type": "offer"}
    )
    assert unknown.status_code == 404


def test_offer_without_sdp_is_a_client_error(app):
    response = httpx.post(f"{app.url}/api/offer", json={"type": "offer"})
    assert response.status_code == 400
    assert "sdp" in response.json()["detail"]


def test_sigterm_stops_cleanly_with_exit_code_0(own_app):
    assert own_app.stop(timeout=20) == 0
    records = [json.loads(line) for line in own_app.logs().splitlines() if line.startswith("{")]
    events = [r["record"]["extra"].get("event") for r in records]
    assert "stopping" in events
    assert "stopped" in events


def test_without_a_token_the_start_up_log_warns_that_anyone_who_reaches_it_may_talk(app):
    records = [json.loads(line)["record"] for line in app.logs().splitlines() if line[:1] == "{"]
    warned = [r for r in records if r["extra"].get("event") == "access_open"]
    assert len(warned) == 1, [r["message"] for r in records]
    assert warned[0]["level"]["name"] == "WARNING"
    port = app.url.rsplit(":", 1)[1]
    assert (
        f"anyone who can reach 127.0.0.1:{port} can talk to the assistant" in warned[0]["message"]
    )
