"""Typed conversations over HTTP and a websocket, for people without a microphone.

- ``POST /api/chat`` with ``{"text": "...", "session_id": "..."}`` answers
  ``{"session_id": "...", "text": "...", "routing": {...}}``; leave ``session_id`` out to start
  a conversation and send it back to continue it.
- ``/ws/chat`` (websocket): send ``{"text": "..."}`` (or plain text); the answer
  streams back as ``{"type": "text", "text": "..."}`` pieces and ends with
  ``{"type": "end", "routing": {...}}``; errors come as ``{"type": "error", "error": "..."}``.
  One websocket is one conversation.

``routing`` is the turn's routing label (which expert answered and why:
:class:`~pipecat_app.twin.route_label.RouteLabel`, the data of the voice
sessions' RTVI server message); it is left out when no expert answered.

Both take the same text: a string of at most :data:`MAX_TEXT_CHARS`
characters that is not blank (:class:`ChatRequest`, :class:`ChatMessage`);
anything else is refused before it reaches a conversation, so nothing of it
is answered or remembered. Both count against ``server.max_text_sessions``
and close after ``server.text_idle_s`` without a turn
(:class:`~pipecat_app.endpoints.sessions.SessionRegistry`). A client that goes
away mid-turn (HTTP request gone, websocket closed) has its turn cancelled,
which closes the expert's stream.

Websocket close codes: 1013 (every text slot taken), 1009 (a message over
``server.max_body_bytes``), 1003 (a binary message), 1001 (closed while idle,
or the server stopping), 1011 (the conversation's pipeline stopped); each
with a reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from contextlib import aclosing, suppress
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from loguru import logger
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from pydantic_core import PydanticCustomError
from starlette.types import Message
from starlette.websockets import WebSocketDisconnected

from pipecat_app.config import AppConfig
from pipecat_app.endpoints.sessions import Refused, SessionRegistry, Slot
from pipecat_app.session import SessionClosed, TextSession, TwinFactory, twin_service
from pipecat_app.twin.route_label import RouteLabel

T = TypeVar("T")

#: Longest user text, in characters (a turn's text; the request body has its own cap).
MAX_TEXT_CHARS = 4000
#: Websocket messages that may wait while a turn runs; more wait in the socket.
INBOX = 4
#: The status a request abandoned by its client is logged with (nginx's convention).
CLIENT_GONE = 499


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "empty text")
    return text


UserText = Annotated[str, Field(max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]


class ChatRequest(BaseModel):
    """One typed user turn."""

    text: UserText
    session_id: str | None = Field(None, max_length=64)


class ChatResponse(BaseModel):
    """The assistant's whole answer to the turn."""

    session_id: str
    text: str
    routing: RouteLabel | None = None


class ChatMessage(BaseModel):
    """One ``/ws/chat`` message in its JSON form."""

    text: UserText


class ClientGone(Exception):
    """The client went away before the work it asked for ended."""


class _SocketChat:
    """A ``/ws/chat`` conversation as the registry sees it: closing it closes the socket."""

    def __init__(self, websocket: WebSocket, session: TextSession) -> None:
        self.websocket = websocket
        self.session = session

    def idle_since(self) -> float | None:
        return self.session.idle_since()

    async def close(self, reason: str) -> None:
        # The socket first, so its client hears why; it may be gone already, in
        # whichever way its server says so (uvicorn, Starlette, a test client).
        with suppress(Exception):
            await self.websocket.close(code=1001, reason=close_reason(f"closed: {reason}"))
        await self.session.close(reason)


class TextSessions:
    """Text conversations under ``server.max_text_sessions``: by id over HTTP, one per websocket."""

    def __init__(self, config: AppConfig, *, twin_factory: TwinFactory = twin_service) -> None:
        self._config = config
        self._twin_factory = twin_factory
        self.sessions: SessionRegistry[TextSession | _SocketChat] = SessionRegistry(
            "text", config.server.max_text_sessions, idle_s=config.server.text_idle_s
        )

    async def open(self) -> TextSession:
        """Start a new conversation (the caller closes it)."""
        session = TextSession(self._config, twin_factory=self._twin_factory)
        await session.start()
        return session

    async def close(self) -> None:
        """Close every conversation."""
        await self.sessions.close_all("the server is stopping")

    async def chat(self, body: ChatRequest, request: Request) -> ChatResponse | Response:
        """One turn of an HTTP conversation (a new one without ``session_id``)."""
        slot: Slot[TextSession | _SocketChat] | None = None
        if body.session_id is None:
            slot = await self.sessions.reserve()
            try:
                session = await self.open()
            except BaseException:
                self.sessions.release(slot, "failed")
                raise
            self.sessions.attach(slot, session)
            session_id = slot.id
        else:
            found = self.sessions.get(body.session_id)
            if not isinstance(found, TextSession):  # a websocket's: not for HTTP
                raise Refused(404, "unknown text session", kind="text", reason="unknown_session")
            session, session_id = found, body.session_id
        answered = False
        try:
            text = await unless_gone(session.answer(body.text), _disconnected(request))
            answered = True
        except ClientGone:
            logger.bind(event="chat_client_gone").info("client left mid-turn: turn cancelled")
            return Response(status_code=CLIENT_GONE)
        except SessionClosed as exc:
            raise Refused(
                503,
                f"the conversation was closed ({exc.reason}); start a new one",
                kind="text",
                reason="closed",
            ) from exc
        except TimeoutError as exc:
            raise HTTPException(status_code=504, detail=str(exc)) from exc
        except RuntimeError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from exc
        finally:
            # A first turn that failed leaves a conversation its client cannot name.
            if slot is not None and not answered:
                await self.sessions.close(slot, "abandoned")
        return ChatResponse(session_id=session_id, text=text, routing=session.route)

    async def converse(self, websocket: WebSocket) -> None:
        """One websocket conversation, from accept to close."""
        await websocket.accept()
        try:
            slot = await self.sessions.reserve()
        except Refused as exc:
            exc.count()
            await websocket.close(code=1013, reason=close_reason(exc.detail))
            return
        try:
            session = await self.open()
        except BaseException:
            self.sessions.release(slot, "failed")
            raise
        self.sessions.attach(slot, _SocketChat(websocket, session))
        ended = "left"
        try:
            ended = await self._turns(websocket, session)
        except ClientGone:
            pass
        finally:
            logger.bind(event="ws_chat_closed", reason=ended).info("text websocket closed")
            await self.sessions.close(slot, ended)

    async def _turns(self, websocket: WebSocket, session: TextSession) -> str:
        """Answer each message until the socket closes.

        Returns why the conversation closed it (``refused``, ``failed``);
        raises ClientGone when the client left.
        """
        inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=INBOX)
        gone = asyncio.Event()
        reader = asyncio.create_task(_read(websocket, inbox, gone), name="ws-chat-reader")
        try:
            while True:
                message = await unless_gone(inbox.get(), gone.wait())
                try:
                    text = message_text(message, self._config.server.max_body_bytes)
                except Refused as exc:
                    exc.count()
                    if exc.status_code == 422:
                        await websocket.send_json({"type": "error", "error": exc.detail})
                        continue
                    code = 1009 if exc.status_code == 413 else 1003
                    await websocket.close(code=code, reason=close_reason(exc.detail))
                    return "refused"
                try:
                    await unless_gone(_answer(websocket, session, text), gone.wait())
                except SessionClosed as exc:
                    with suppress(RuntimeError, WebSocketDisconnect, OSError):
                        await websocket.close(code=1011, reason=close_reason(exc.reason))
                    return "failed"
        except (WebSocketDisconnect, WebSocketDisconnected):
            raise ClientGone from None
        finally:
            reader.cancel()

    def router(self) -> APIRouter:
        """``POST /api/chat`` and ``/ws/chat``."""
        router = APIRouter()
        router.add_api_route(
            "/api/chat",
            self.chat,
            methods=["POST"],
            response_model=ChatResponse,
            responses={
                404: {"description": "Unknown session_id."},
                413: {"description": "Body over server.max_body_bytes."},
                422: {"description": "Text missing, not a string, blank or too long."},
                503: {"description": "Every text slot is taken (Retry-After), or closed."},
            },
        )
        router.add_api_websocket_route("/ws/chat", self.converse)
        return router


def message_text(message: Message, max_bytes: int) -> str:
    """The user's text in one websocket message: JSON ``{"text": ...}`` or plain text.

    Raises :class:`Refused`: 422 for text that is missing, not a string, blank
    or too long (JSON that is not an object included: ``5``, ``[1]``); 413 for
    a message over ``max_bytes``; 415 for a binary message.
    """
    if message.get("text") is None:
        raise Refused(
            415, "binary messages are not accepted: send text", kind="text", reason="invalid"
        )
    frame: str = message["text"]
    if len(frame) > max_bytes or len(frame.encode()) > max_bytes:
        raise Refused(413, f"message over {max_bytes} bytes", kind="text", reason="too_large")
    try:
        return ChatMessage.model_validate_json(frame).text.strip()
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid":
            raise Refused(422, _said(exc), kind="text", reason="invalid") from None
    try:
        return ChatMessage(text=frame.strip()).text
    except ValidationError as exc:
        raise Refused(422, _said(exc), kind="text", reason="invalid") from None


_SAID = {
    "missing": 'no "text" in the message',
    "string_type": '"text" must be a string',
    "model_type": 'send {"text": "..."} or plain text',
    "blank_text": "empty text",
    "string_too_long": f"text longer than {MAX_TEXT_CHARS} characters",
}


def _said(error: ValidationError) -> str:
    """What a websocket client is told about its refused message (never the message)."""
    first = error.errors()[0]
    return _SAID.get(first["type"], first["msg"])


def close_reason(text: str) -> str:
    """``text`` cut to fit a websocket close frame (123 bytes of UTF-8)."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


async def unless_gone(work: Coroutine[Any, Any, T], gone: Awaitable[object]) -> T:
    """Run ``work`` unless ``gone`` finishes first: then cancel it and raise ClientGone."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(gone)
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        raise ClientGone
    return task.result()


async def _disconnected(request: Request) -> None:
    """Return when the HTTP client has gone (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _read(websocket: WebSocket, inbox: asyncio.Queue[Message], gone: asyncio.Event) -> None:
    """Queue the client's messages for the conversation; set ``gone`` when it leaves."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            await inbox.put(message)
    except (WebSocketDisconnect, WebSocketDisconnected, OSError):
        return
    finally:
        gone.set()


async def _answer(websocket: WebSocket, session: TextSession, text: str) -> None:
    """Stream one turn's answer to the socket, then ``end`` (or an ``error``)."""
    try:
        async with aclosing(session.ask(text)) as pieces:
            async for piece in pieces:
                await websocket.send_json({"type": "text", "text": piece})
    except (WebSocketDisconnect, WebSocketDisconnected):
        raise
    except (TimeoutError, RuntimeError) as exc:
        await websocket.send_json({"type": "error", "error": str(exc)})
        return
    end: dict[str, Any] = {"type": "end"}
    if session.route is not None:
        end["routing"] = session.route.model_dump()
    await websocket.send_json(end)
