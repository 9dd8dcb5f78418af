"""Sessions: voice and text under caps of their own, slots taken before any work, idle expiry.

The app runs in this process (FastAPI's TestClient, lifespan included) with
real pipelines and TwinService; its expert is a closed port (every turn gets
the fallback reply at once) or one that never answers (a turn that lasts).
The voice tests load the real speech models for each accepted offer (slow).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from inprocess import config_for, sample, stalled_expert
from pipecat_app.server import create_app
from pipecat_app.twin.service import NO_EXPERT_REPLY


def chat(client: TestClient, text: str, session_id: str | None = None) -> httpx.Response:
    body = {"text": text} | ({"session_id": session_id} if session_id else {})
    return client.post("/api/chat", json=body)


def concurrently(count: int, call, *args) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _n: call(*args), range(count)))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def quiet_socket_closed(client: TestClient) -> WebSocketDisconnect:
    """How the app closes a new /ws/chat that sends nothing."""
    socket = client.websocket_connect("/ws/chat")
    with socket as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value


def post_offer(client: TestClient, body: dict[str, object]) -> httpx.Response:
    return client.post("/api/offer", json=body)


def audio_offer() -> str:
    """A real browser-like SDP offer with one audio track (aiortc), never followed up."""
    from aiortc import RTCPeerConnection

    async def make() -> str:
        peer = RTCPeerConnection()
        peer.addTransceiver("audio", direction="sendrecv")
        await peer.setLocalDescription(await peer.createOffer())
        sdp = peer.localDescription.sdp
        await peer.close()
        return sdp

    return asyncio.run(make())


def test_sixteen_text_clients_are_served_at_once_and_the_seventeenth_hears_when_to_retry(
    tmp_path,
):
    config = config_for(tmp_path)
    assert config.server.max_text_sessions == 16
    with TestClient(create_app(config)) as client:
        replies = concurrently(16, chat, client, "Hello")
        assert [r.status_code for r in replies] == [200] * 16, [r.text for r in replies]
        assert all(r.json()["text"] for r in replies)
        assert len({r.json()["session_id"] for r in replies}) == 16
        refused = chat(client, "One more")
        assert refused.status_code == 503
        assert "too many text sessions" in refused.json()["detail"]
        # The first idle conversation expires after text_idle_s (300 s).
        assert 1 <= int(refused.headers["Retry-After"]) <= config.server.text_idle_s
        health = client.get("/health").json()["sessions"]
        assert health == {"voice": 0, "text": 16, "max": 4, "max_text": 16}


def test_a_full_text_cap_refuses_websockets_with_1013_and_a_reason(tmp_path):
    config = config_for(tmp_path, server__max_text_sessions=1)
    before = sample("twin_sessions_rejected_total", kind="text", reason="full")
    with TestClient(create_app(config)) as client:
        assert chat(client, "Hello").status_code == 200
        closed = quiet_socket_closed(client)
        assert closed.code == 1013
        assert "too many text sessions" in closed.reason
        assert sample("twin_sessions_rejected_total", kind="text", reason="full") == before + 1


def test_idle_text_conversations_expire_and_a_late_turn_hears_why(tmp_path):
    config = config_for(tmp_path, server__text_idle_s=0.5)
    before = sample("twin_sessions_closed_total", kind="text", reason="idle")
    with TestClient(create_app(config)) as client:
        first = chat(client, "Hello")
        assert first.status_code == 200
        assert sample("twin_sessions_active", kind="text") == 1
        wait_for(lambda: client.get("/health").json()["sessions"]["text"] == 0, 5, "expiry")
        assert sample("twin_sessions_active", kind="text") == 0
        assert sample("twin_sessions_closed_total", kind="text", reason="idle") == before + 1
        late = chat(client, "Are you there?", first.json()["session_id"])
        assert late.status_code == 503
        assert "closed (idle)" in late.json()["detail"]
        assert chat(client, "Hi", "never-handed-out").status_code == 404
        # A quiet websocket is closed too, saying why.
        closed = quiet_socket_closed(client)
        assert (closed.code, closed.reason) == (1001, "closed: idle for 0.5 s")


def test_a_conversation_in_the_middle_of_a_turn_is_never_expired(tmp_path):
    with stalled_expert() as expert_url:
        config = config_for(
            tmp_path,
            expert_url=expert_url,
            server__text_idle_s=0.2,
            twin__routing__expert_timeout_s=2,
        )
        with TestClient(create_app(config)) as client:
            start = time.monotonic()
            reply = chat(client, "Hello")
            assert time.monotonic() - start > 1.5, "the turn did not last past the idle time"
            assert reply.status_code == 200
            assert reply.json()["text"] == NO_EXPERT_REPLY


def test_a_burst_of_new_chats_gets_answers_or_503_never_an_empty_200(tmp_path):
    config = config_for(tmp_path, server__max_text_sessions=4)
    with TestClient(create_app(config)) as client:
        replies = concurrently(12, chat, client, "Hello")
        answered = [r for r in replies if r.status_code == 200]
        refused = [r for r in replies if r.status_code == 503]
        assert len(answered) == 4
        assert len(refused) == 8
        assert all(r.json()["text"] == NO_EXPERT_REPLY for r in answered)
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)


def test_a_turn_cut_short_by_the_server_stopping_is_a_503_with_the_reason(tmp_path):
    with stalled_expert() as expert_url:
        config = config_for(tmp_path, expert_url=expert_url, twin__routing__expert_timeout_s=30)
        app = create_app(config)
        with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(chat, client, "Hello")
            wait_for(lambda: client.get("/health").json()["sessions"]["text"] == 1, 10, "a turn")
            time.sleep(0.5)
            client.portal.call(app.state.text.close)
            reply = pending.result(timeout=20)
        assert reply.status_code == 503
        assert "the server is stopping" in reply.json()["detail"]


@pytest.mark.slow
def test_voice_offers_take_a_slot_before_the_answer_and_a_peer_that_never_connects_is_dropped(
    tmp_path,
):
    config = config_for(tmp_path, server__max_sessions=2, server__voice_connect_timeout_s=4)
    offer = {"type": "offer", "sdp": audio_offer()}
    with TestClient(create_app(config)) as client:
        replies = concurrently(8, post_offer, client, offer)
        codes = sorted(r.status_code for r in replies)
        assert codes == [200, 200] + [503] * 6
        assert all(int(r.headers["Retry-After"]) >= 1 for r in replies if r.status_code == 503)
        assert client.get("/health").json()["sessions"]["voice"] == 2
        assert sample("twin_sessions_active", kind="voice") == 2
        # A known pc_id renegotiates its own connection: no new slot.
        pc_id = next(r.json()["pc_id"] for r in replies if r.status_code == 200)
        again = client.post("/api/offer", json={**offer, "pc_id": pc_id})
        assert again.status_code == 200
        assert again.json()["pc_id"] == pc_id
        assert client.get("/health").json()["sessions"]["voice"] == 2
        # Nobody connects: both are dropped at the timeout (models loading included).
        never = sample("twin_sessions_closed_total", kind="voice", reason="never_connected")
        wait_for(lambda: client.get("/health").json()["sessions"]["voice"] == 0, 30, "the drop")
        assert sample("twin_sessions_closed_total", kind="voice", reason="never_connected") == (
            never + 2
        )
        assert client.post("/api/offer", json={**offer, "pc_id": pc_id}).status_code == 404
        assert client.post("/api/offer", json=offer).status_code == 200


@pytest.mark.slow
def test_idle_chats_websockets_and_empty_offers_cannot_lock_voice_out(tmp_path):
    config = config_for(tmp_path)
    with TestClient(create_app(config)) as client:
        assert all(r.status_code == 200 for r in concurrently(16, chat, client, "Hello"))
        for _ in range(config.server.max_sessions):
            empty = client.post("/api/offer", json={"type": "offer", "sdp": ""})
            assert empty.status_code == 400
        assert quiet_socket_closed(client).code == 1013  # text is full...
        answer = client.post("/api/offer", json={"type": "offer", "sdp": audio_offer()})
        assert answer.status_code == 200  # ...and voice is not
        assert answer.json()["type"] == "answer"
        assert client.get("/health").json()["sessions"]["voice"] == 1
