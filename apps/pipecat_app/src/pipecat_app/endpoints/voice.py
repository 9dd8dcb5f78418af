"""Browser voice: pipecat's prebuilt SmallWebRTC client and the offer/answer endpoints.

The prebuilt client (``pipecat-ai-small-webrtc-prebuilt``) is served at
``/client/``. Its connect button POSTs ``/start`` for a session id, then sends
its SDP offer to ``/sessions/{id}/api/offer`` (ICE candidates with PATCH);
``/api/offer`` takes offers directly. No STUN server is handed out: the app is
reached on the local network or through the cluster's own addresses.

An offer without ``pc_id`` is a new peer: it takes a voice slot
(``server.max_sessions``) before it is answered, or gets 503 with
``Retry-After``; an offer with a ``pc_id`` renegotiates that peer's
connection and must name one the app holds (404 otherwise). An offer that is
not JSON, not of ``type`` "offer", or whose SDP has no audio media gets 400
with the reason. A peer that is not connected ``server.voice_connect_timeout_s``
after its answer (speech models loading included) is dropped.

The prebuilt client's microphone handling would load Daily's call-machine
bundle from the internet; ``prebuilt_client.py`` serves it with a local media layer
instead, so it needs nothing but the app. ``/voice`` is a small page of plain
WebRTC against ``/api/offer`` (no framework); it shows the conversation from
the RTVI messages on its data channel (``/voice/conversation.js``). Its camera
toggle sends the camera as the offer's video track with ``request_data``
``{"camera": true}``: that session's transport then takes video too
(``video_in_enabled``, the camera captured at ``CAMERA_FPS``), and
TwinService's ``describe_scene`` sends the latest frame to the vision service.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiortc.sdp import SessionDescription
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from loguru import logger
from pipecat.transports.base_transport import TransportParams, VideoInSourceParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    IceCandidate,
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pydantic import AliasChoices, BaseModel, Field, ValidationError

from pipecat_app.config import AppConfig
from pipecat_app.endpoints.prebuilt_client import mount_prebuilt_client
from pipecat_app.endpoints.sessions import Refused, SessionRegistry, Slot
from pipecat_app.session import TwinFactory, VoiceSession, twin_service

VOICE_PAGE = Path(__file__).resolve().parent.parent / "static" / "voice.html"
#: The voice page's conversation view (what was said, which expert answered and why).
CONVERSATION_JS = VOICE_PAGE.with_name("conversation.js")

#: Camera frames a second a session with the camera on takes (the latest is described).
CAMERA_FPS = 1

#: ``/start`` session ids remembered (the oldest are forgotten first).
STARTED_REMEMBERED = 1024

M = TypeVar("M", bound=BaseModel)


class Offer(BaseModel):
    """An SDP offer as SmallWebRTC clients send it."""

    sdp: str = Field(min_length=1)
    type: Literal["offer"]
    pc_id: str | None = Field(None, max_length=200)
    restart_pc: bool | None = None
    request_data: Any = Field(None, validation_alias=AliasChoices("request_data", "requestData"))


class Candidate(BaseModel):
    """One ICE candidate (an empty ``candidate`` ends the candidates, RFC 8840)."""

    candidate: str = ""
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


class CandidatesPatch(BaseModel):
    """Trickled ICE candidates for a peer connection."""

    pc_id: str
    candidates: list[Candidate] = []


class WebRTCSessions:
    """Voice sessions over SmallWebRTC under ``server.max_sessions``: one pipeline per peer."""

    def __init__(self, config: AppConfig, *, twin_factory: TwinFactory = twin_service) -> None:
        self._config = config
        self._twin_factory = twin_factory
        self._handler = SmallWebRTCRequestHandler()
        self._started: OrderedDict[str, None] = OrderedDict()
        self.sessions: SessionRegistry[VoiceSession] = SessionRegistry(
            "voice", config.server.max_sessions
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def _run(
        self, connection: SmallWebRTCConnection, slot: Slot[VoiceSession], *, camera: bool
    ) -> None:
        pc_id = connection.pc_id
        deadline = slot.reserved_at + self._config.server.voice_connect_timeout_s
        ended = "left"
        try:
            transport = SmallWebRTCTransport(
                webrtc_connection=connection,
                params=TransportParams(
                    audio_in_enabled=True,
                    audio_out_enabled=True,
                    video_in_enabled=camera,
                    video_in_sources=(
                        {"camera": VideoInSourceParams(framerate=CAMERA_FPS)} if camera else {}
                    ),
                ),
            )
            # Loading the speech models takes seconds: not on the event loop,
            # where it would stall every other session's audio.
            session = await asyncio.to_thread(
                VoiceSession, self._config, transport, twin_factory=self._twin_factory
            )
            if not self.sessions.holds(slot):
                return  # closed while the models loaded (the server is stopping)
            self.sessions.attach(slot, session)
            connected = asyncio.Event()

            @transport.event_handler("on_client_connected")
            async def _here(_transport: SmallWebRTCTransport, _client: object) -> None:
                connected.set()

            @transport.event_handler("on_client_disconnected")
            async def _gone(_transport: SmallWebRTCTransport, _client: object) -> None:
                logger.bind(event="webrtc_disconnected", pc_id=pc_id).info("client left")
                await session.stop()

            logger.bind(event="webrtc_session", pc_id=pc_id).info("voice session started")
            run = asyncio.create_task(session.run(), name=f"voice-run-{pc_id}")
            waiting = asyncio.create_task(connected.wait())
            await asyncio.wait(
                {run, waiting},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiting.cancel()
            if not connected.is_set() and not run.done():
                ended = "never_connected"
                logger.bind(event="webrtc_never_connected", pc_id=pc_id).warning(
                    "peer not connected within "
                    f"{self._config.server.voice_connect_timeout_s:.0f} s of its answer: dropped"
                )
                await session.stop()
            await run
        except Exception:
            ended = "failed"
            logger.exception(f"voice session {pc_id} failed")
        finally:
            self.sessions.release(slot, ended)
            try:
                await connection.disconnect()
            except Exception:
                logger.exception(f"closing the peer connection {pc_id} failed")
            logger.bind(event="webrtc_session_end", pc_id=pc_id, reason=ended).info(
                "voice session ended"
            )

    async def offer(self, offer: Offer) -> dict[str, Any]:
        """Answer an SDP offer; a new peer takes a slot first and gets its own pipeline."""
        _check_audio(offer.sdp)
        request = SmallWebRTCRequest(
            sdp=offer.sdp,
            type=offer.type,
            pc_id=offer.pc_id,
            restart_pc=offer.restart_pc,
            request_data=offer.request_data,
        )
        if offer.pc_id:
            if offer.pc_id not in self.sessions:
                raise Refused(
                    404,
                    "unknown pc_id: leave it out to connect anew",
                    kind="voice",
                    reason="unknown_session",
                )
            return await self._answer(request, _renegotiated)
        slot = await self.sessions.reserve()

        async def started(connection: SmallWebRTCConnection) -> None:
            self.sessions.rename(slot, connection.pc_id)
            task = asyncio.create_task(
                self._run(connection, slot, camera=_camera_on(offer)),
                name=f"voice-{connection.pc_id}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            return await self._answer(request, started)
        except BaseException:
            self.sessions.release(slot, "failed")
            raise

    async def _answer(
        self,
        request: SmallWebRTCRequest,
        started: Callable[[SmallWebRTCConnection], Awaitable[None]],
    ) -> dict[str, Any]:
        try:
            answer = await self._handler.handle_web_request(request, started)
        except ValueError as exc:  # aiortc's word on an SDP it cannot answer
            raise Refused(
                400, f"the offer cannot be answered: {exc}"[:300], kind="voice", reason="invalid"
            ) from exc
        if answer is None:
            raise RuntimeError("SmallWebRTC gave no SDP answer")
        return answer

    async def candidates(self, patch: CandidatesPatch) -> dict[str, str]:
        """Add trickled ICE candidates to a known peer connection."""
        request = SmallWebRTCPatchRequest(
            pc_id=patch.pc_id,
            candidates=[
                IceCandidate(c.candidate, c.sdp_mid or "", c.sdp_mline_index or 0)
                for c in patch.candidates
            ],
        )
        try:
            await self._handler.handle_patch_request(request)
        except (ValueError, IndexError) as exc:
            raise Refused(400, "bad ICE candidate", kind="voice", reason="invalid") from exc
        return {"status": "success"}

    async def close(self) -> None:
        """Stop every session and close the peer connections."""
        await self.sessions.close_all("the server is stopping")
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

        @router.get("/voice/conversation.js", include_in_schema=False)
        async def conversation() -> FileResponse:
            return FileResponse(CONVERSATION_JS, media_type="text/javascript")

        @router.post("/start")
        async def start(request: Request) -> dict[str, Any]:
            session_id = str(uuid.uuid4())
            self._started[session_id] = None
            while len(self._started) > STARTED_REMEMBERED:
                self._started.popitem(last=False)
            return {"sessionId": session_id}

        @router.post("/api/offer")
        async def offer(request: Request) -> dict[str, Any]:
            return await self.offer(await _parse(request, Offer, "bad offer"))

        @router.patch("/api/offer")
        async def candidates(request: Request) -> dict[str, str]:
            return await self.candidates(await _parse(request, CandidatesPatch, "bad ICE patch"))

        @router.post("/sessions/{session_id}/api/offer")
        async def session_offer(session_id: str, request: Request) -> dict[str, Any]:
            if session_id not in self._started:
                raise Refused(
                    404,
                    "unknown session, POST /start first",
                    kind="voice",
                    reason="unknown_session",
                )
            return await self.offer(await _parse(request, Offer, "bad offer"))

        @router.patch("/sessions/{session_id}/api/offer")
        async def session_candidates(session_id: str, request: Request) -> dict[str, str]:
            return await self.candidates(await _parse(request, CandidatesPatch, "bad ICE patch"))

        return router

    def mount_client(self, app: FastAPI) -> None:
        """Serve the prebuilt browser client at ``/client/`` (offline, see prebuilt_client.py)."""
        mount_prebuilt_client(app)


async def _renegotiated(_connection: SmallWebRTCConnection) -> None:
    """A renegotiated connection keeps its session: nothing to start."""


async def _parse(request: Request, model: type[M], what: str) -> M:
    """The request's JSON body as ``model``, or 400 naming each wrong field (never its value)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()[:5]
        )
        raise Refused(400, f"{what}: {problems}", kind="voice", reason="invalid") from None


def _camera_on(offer: Offer) -> bool:
    """Whether the client sends its camera (the voice page's ``request_data``)."""
    data = offer.request_data
    return isinstance(data, dict) and data.get("camera") is True


def _check_audio(sdp: str) -> None:
    """400 unless ``sdp`` parses and offers audio (the assistant listens to a microphone)."""
    try:
        media = [m.kind for m in SessionDescription.parse(sdp).media]
    except Exception as exc:  # aiortc's parser on text from the network
        raise Refused(
            400, f"the SDP does not parse ({type(exc).__name__})", kind="voice", reason="invalid"
        ) from None
    if "audio" not in media:
        raise Refused(
            400,
            "the offer has no audio media: the assistant needs a microphone track",
            kind="voice",
            reason="invalid",
        )
