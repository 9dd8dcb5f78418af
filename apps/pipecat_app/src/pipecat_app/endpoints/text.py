"""Typed conversations over HTTP and a websocket, for people without a microphone.

- ``POST /api/chat`` with ``{"text": "...", "session_id": "..."}`` answers
  ``{"session_id": "...", "text": "..."}``; leave ``session_id`` out to start
  a conversation and send it back to continue it.
- ``/ws/chat`` (websocket): send ``{"text": "..."}`` (or plain text); the answer
  streams back as ``{"type": "text", "text": "..."}`` pieces and ends with
  ``{"type": "end"}``; errors come as ``{"type": "error", "error": "..."}``.
  One websocket is one conversation.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from collections.abc import Callable

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from loguru import logger
from pydantic import BaseModel, Field

from pipecat_app.config import AppConfig
from pipecat_app.session import TextSession, TwinFactory, twin_service


class ChatRequest(BaseModel):
    """One typed user turn."""

    text: str = Field(min_length=1, max_length=4000)
    session_id: str | None = None


class ChatResponse(BaseModel):
    """The assistant's whole answer to the turn."""

    session_id: str
    text: str


class TextSessions:
    """Text conversations by id; the least recently used one goes when full."""

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
        self.sessions: OrderedDict[str, TextSession] = OrderedDict()
        self.open_sockets = 0
        self._lock = asyncio.Lock()

    async def open(self) -> TextSession:
        """Start a new conversation (the caller closes it)."""
        session = TextSession(self._config, twin_factory=self._twin_factory)
        await session.start()
        return session

    async def _get(self, session_id: str | None) -> tuple[str, TextSession]:
        async with self._lock:
            if session_id and session_id in self.sessions:
                self.sessions.move_to_end(session_id)
                return session_id, self.sessions[session_id]
            if session_id:
                raise HTTPException(status_code=404, detail="unknown session_id")
            if not self._has_capacity() and self.sessions:
                _, oldest = self.sessions.popitem(last=False)
                await oldest.close()
            if not self._has_capacity():
                raise HTTPException(status_code=503, detail="too many sessions, try again later")
            new_id = uuid.uuid4().hex
            self.sessions[new_id] = await self.open()
            return new_id, self.sessions[new_id]

    async def close(self) -> None:
        """Close every conversation."""
        for session in list(self.sessions.values()):
            await session.close()
        self.sessions.clear()

    def router(self) -> APIRouter:
        """``POST /api/chat`` and ``/ws/chat``."""
        router = APIRouter()

        @router.post("/api/chat")
        async def chat(request: ChatRequest) -> ChatResponse:
            session_id, session = await self._get(request.session_id)
            try:
                text = await session.answer(request.text)
            except TimeoutError as exc:
                raise HTTPException(status_code=504, detail=str(exc)) from exc
            except RuntimeError as exc:
                raise HTTPException(status_code=502, detail=str(exc)) from exc
            return ChatResponse(session_id=session_id, text=text)

        @router.websocket("/ws/chat")
        async def chat_socket(websocket: WebSocket) -> None:
            await websocket.accept()
            if not self._has_capacity():
                await websocket.close(code=1013, reason="too many sessions")
                return
            session = await self.open()
            self.open_sockets += 1
            try:
                while True:
                    text = _user_text(await websocket.receive_text())
                    if not text:
                        await websocket.send_json({"type": "error", "error": "empty text"})
                        continue
                    try:
                        async for piece in session.ask(text):
                            await websocket.send_json({"type": "text", "text": piece})
                        await websocket.send_json({"type": "end"})
                    except (TimeoutError, RuntimeError) as exc:
                        await websocket.send_json({"type": "error", "error": str(exc)})
            except WebSocketDisconnect:
                logger.bind(event="ws_chat_closed").info("text websocket closed")
            finally:
                self.open_sockets -= 1
                await session.close()

        return router


def _user_text(message: str) -> str:
    """The user's text from a websocket message: JSON ``{"text": ...}`` or plain text."""
    try:
        data = json.loads(message)
    except json.JSONDecodeError:
        return message.strip()
    if isinstance(data, dict):
        return str(data.get("text", "")).strip()
    return message.strip()
