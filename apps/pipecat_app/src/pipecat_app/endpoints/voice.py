"""Browser voice: pipecat's prebuilt SmallWebRTC client and the offer/answer endpoints.

The prebuilt client (``pipecat-ai-small-webrtc-prebuilt``) is served at
``/client/``. Its connect button POSTs ``/start`` for a session id, then sends
its SDP offer to ``/sessions/{id}/api/offer`` (ICE candidates with PATCH);
``/api/offer`` takes offers directly. No STUN server is handed out: the app is
reached on the local network or through the cluster's own addresses.

The prebuilt client's microphone handling would load Daily's call-machine
bundle from the internet; ``prebuilt_client.py`` serves it with a local media layer
instead, so it needs nothing but the app. ``/voice`` is a small page of plain
WebRTC against ``/api/offer`` (no framework, one file).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse
from loguru import logger
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    IceCandidate,
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

from pipecat_app.config import AppConfig
from pipecat_app.endpoints.prebuilt_client import mount_prebuilt_client
from pipecat_app.session import TwinFactory, VoiceSession, twin_service

VOICE_PAGE = Path(__file__).resolve().parent.parent / "static" / "voice.html"


class WebRTCSessions:
    """Voice sessions over SmallWebRTC: one pipeline per peer connection."""

    def __init__(
        self,
        config: AppConfig,
        *,
        capacity: Callable[[], bool],
        twin_factory: TwinFactory = twin_service,
    ) -> None:
        self._config = config
        self._has_capacity = capacity
        self._twin_factory = twin_factory
        self._handler = SmallWebRTCRequestHandler()
        self._started: set[str] = set()
        self.sessions: dict[str, VoiceSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _run(self, connection: SmallWebRTCConnection) -> None:
        pc_id = connection.pc_id
        try:
            transport = SmallWebRTCTransport(
                webrtc_connection=connection,
                params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
            )
            # Loading the speech models takes seconds: not on the event loop,
            # where it would stall every other session's audio.
            session = await asyncio.to_thread(
                VoiceSession, self._config, transport, twin_factory=self._twin_factory
            )

            @transport.event_handler("on_client_disconnected")
            async def _gone(_transport: SmallWebRTCTransport, _client: object) -> None:
                logger.bind(event="webrtc_disconnected", pc_id=pc_id).info("client left")
                await session.stop()

            self.sessions[pc_id] = session
            logger.bind(event="webrtc_session", pc_id=pc_id).info("voice session started")
            await session.run()
        except Exception:
            logger.exception(f"voice session {pc_id} failed")
            await connection.disconnect()
        finally:
            self.sessions.pop(pc_id, None)
            logger.bind(event="webrtc_session_end", pc_id=pc_id).info("voice session ended")

    async def offer(self, request: SmallWebRTCRequest) -> dict[str, Any]:
        """Answer an SDP offer; a new peer gets its own pipeline."""
        if not request.pc_id and not self._has_capacity():
            raise HTTPException(status_code=503, detail="too many sessions, try again later")

        async def started(connection: SmallWebRTCConnection) -> None:
            task = asyncio.create_task(self._run(connection), name=f"voice-{connection.pc_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        answer = await self._handler.handle_web_request(request, started)
        if answer is None:
            raise HTTPException(status_code=500, detail="no SDP answer")
        return answer

    async def close(self) -> None:
        """Stop every session and close the peer connections."""
        for session in list(self.sessions.values()):
            await session.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self._handler.close()

    def router(self) -> APIRouter:
        """``/start``, the offer endpoints and the prebuilt client at ``/client/``."""
        router = APIRouter()

        @router.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse(url="/client/")

        @router.get("/voice", include_in_schema=False)
        async def voice() -> FileResponse:
            return FileResponse(VOICE_PAGE, media_type="text/html")

        @router.post("/start")
        async def start(request: Request) -> dict[str, Any]:
            session_id = str(uuid.uuid4())
            self._started.add(session_id)
            return {"sessionId": session_id}

        @router.post("/api/offer")
        async def offer(body: dict[str, Any]) -> dict[str, Any]:
            return await self.offer(_offer_request(body))

        @router.patch("/api/offer")
        async def candidates(body: dict[str, Any]) -> dict[str, str]:
            await self._handler.handle_patch_request(_patch_request(body))
            return {"status": "success"}

        @router.post("/sessions/{session_id}/api/offer")
        async def session_offer(session_id: str, body: dict[str, Any]) -> dict[str, Any]:
            if session_id not in self._started:
                raise HTTPException(status_code=404, detail="unknown session, POST /start first")
            return await self.offer(_offer_request(body))

        @router.patch("/sessions/{session_id}/api/offer")
        async def session_candidates(session_id: str, body: dict[str, Any]) -> dict[str, str]:
            await self._handler.handle_patch_request(_patch_request(body))
            return {"status": "success"}

        return router

    def mount_client(self, app: FastAPI) -> None:
        """Serve the prebuilt browser client at ``/client/`` (offline, see prebuilt_client.py)."""
        mount_prebuilt_client(app)


def _offer_request(body: dict[str, Any]) -> SmallWebRTCRequest:
    try:
        return SmallWebRTCRequest(
            sdp=body["sdp"],
            type=body["type"],
            pc_id=body.get("pc_id"),
            restart_pc=body.get("restart_pc"),
            request_data=body.get("request_data") or body.get("requestData"),
        )
    except KeyError as exc:
        raise HTTPException(status_code=400, detail=f"offer without {exc.args[0]}") from exc


def _patch_request(body: dict[str, Any]) -> SmallWebRTCPatchRequest:
    try:
        return SmallWebRTCPatchRequest(
            pc_id=body["pc_id"],
            candidates=[IceCandidate(**c) for c in body.get("candidates", [])],
        )
    except (KeyError, TypeError) as exc:
        raise HTTPException(status_code=400, detail=f"bad ICE candidate patch: {exc}") from exc
