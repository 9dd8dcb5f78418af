"""The sessions of one kind, voice or text: a cap, slots taken before any work, idle expiry.

Voice and text each have a :class:`SessionRegistry` with a cap of its own
(``server.max_sessions``, ``server.max_text_sessions``), so typed chats never
take a voice slot. A newcomer takes a :class:`Slot` *before* the work for it
starts (an SDP answer, speech models loading, a pipeline starting): the cap
counts reserved slots, so concurrent offers cannot pass it. Over the cap,
:meth:`SessionRegistry.reserve` raises :class:`Refused` (503 with
``Retry-After``). A text conversation without a turn for ``idle_s`` is closed;
one in the middle of a turn (running or waiting for the one running) never
is. The ids of recently closed sessions are remembered with the reason, so a
client still using one hears why (503) instead of "unknown" (404).

Every refusal is a :class:`Refused`, an ``HTTPException`` that carries its
kind and reason for ``twin_sessions_rejected_total``; ``server.py`` counts
them where they become responses, the websocket where it closes.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from fastapi import HTTPException
from loguru import logger

from pipecat_app.metrics import SESSIONS_ACTIVE, SESSIONS_CLOSED, SESSIONS_REJECTED

Kind = Literal["voice", "text"]

#: Retry-After, in seconds, when no session is about to expire.
RETRY_AFTER_S = 10
#: Closed session ids remembered with their reason.
CLOSED_REMEMBERED = 1024


class Refused(HTTPException):
    """A request turned away: the status and message the client gets, and the metric's labels."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        kind: Kind,
        reason: str,
        retry_after_s: int | None = None,
    ) -> None:
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.kind: Kind = kind
        self.reason = reason
        self.retry_after_s = retry_after_s

    def count(self) -> None:
        """Add this refusal to ``twin_sessions_rejected_total``."""
        SESSIONS_REJECTED.labels(kind=self.kind, reason=self.reason).inc()


class Conversation(Protocol):
    """What the registry needs of a session."""

    def idle_since(self) -> float | None:
        """Since when (``time.monotonic``) it has had no turn; None in the middle of one."""
        ...

    async def close(self, reason: str) -> None:
        """End it now; a turn in progress gets told why."""
        ...


C = TypeVar("C", bound=Conversation)


@dataclass(eq=False)
class Slot(Generic[C]):
    """One place under the cap: reserved first, its session attached once it exists."""

    id: str
    reserved_at: float = field(default_factory=time.monotonic)
    session: C | None = None


class SessionRegistry(Generic[C]):
    """The sessions of one kind under one cap (see the module docstring).

    Args:
        kind: ``voice`` or ``text`` (the metrics' label).
        cap: Most slots held at once.
        idle_s: Close a session that has had no turn for this long; None: never.
    """

    def __init__(self, kind: Kind, cap: int, *, idle_s: float | None = None) -> None:
        self.kind: Kind = kind
        self.cap = cap
        self.idle_s = idle_s
        self._slots: dict[str, Slot[C]] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()
        SESSIONS_ACTIVE.labels(kind=kind).inc(0)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._slots

    def holds(self, slot: Slot[C]) -> bool:
        """Whether ``slot`` is still held (not closed by expiry or shutdown)."""
        return self._slots.get(slot.id) is slot

    async def reserve(self) -> Slot[C]:
        """Take a slot for a newcomer, after closing sessions idle too long.

        Raises :class:`Refused` (503, ``Retry-After``) when every slot is taken.
        """
        await self.expire_idle()
        if len(self._slots) >= self.cap:
            retry = self._retry_after()
            raise Refused(
                503,
                f"too many {self.kind} sessions ({self.cap} open); try again in {retry} s",
                kind=self.kind,
                reason="full",
                retry_after_s=retry,
            )
        slot: Slot[C] = Slot(uuid.uuid4().hex)
        self._slots[slot.id] = slot
        SESSIONS_ACTIVE.labels(kind=self.kind).inc()
        return slot

    def rename(self, slot: Slot[C], session_id: str) -> None:
        """Key ``slot`` by the id its client knows (a WebRTC ``pc_id``)."""
        if self.holds(slot):
            del self._slots[slot.id]
            self._slots[session_id] = slot
        slot.id = session_id

    def attach(self, slot: Slot[C], session: C) -> None:
        """The reserved slot's session exists now."""
        slot.session = session

    def get(self, session_id: str) -> C:
        """The running session ``session_id``.

        Raises :class:`Refused`: 503 with the reason for a session closed
        lately, 404 for an id never handed out (or long forgotten).
        """
        slot = self._slots.get(session_id)
        if slot is not None and slot.session is not None:
            return slot.session
        if session_id in self._closed:
            raise Refused(
                503,
                f"this {self.kind} session was closed ({self._closed[session_id]}); "
                "start a new one",
                kind=self.kind,
                reason="closed",
            )
        raise Refused(404, f"unknown {self.kind} session", kind=self.kind, reason="unknown_session")

    def release(self, slot: Slot[C], reason: str) -> bool:
        """Give ``slot`` back; False if it was already given back.

        A slot whose session existed counts in ``twin_sessions_closed_total``
        with ``reason``; the caller closes the session.
        """
        if not self.holds(slot):
            return False
        del self._slots[slot.id]
        SESSIONS_ACTIVE.labels(kind=self.kind).dec()
        if slot.session is not None:
            SESSIONS_CLOSED.labels(kind=self.kind, reason=reason).inc()
            self._closed[slot.id] = reason
            while len(self._closed) > CLOSED_REMEMBERED:
                self._closed.popitem(last=False)
        return True

    async def close(self, slot: Slot[C], reason: str, *, detail: str | None = None) -> None:
        """Give ``slot`` back and close its session (once, whoever asks first).

        ``detail`` is what a client still waiting is told (``reason`` by default).
        The close runs to its end even when the caller is cancelled (a
        handler whose client left): a session never outlives its slot.
        """
        if self.release(slot, reason) and slot.session is not None:
            await asyncio.shield(slot.session.close(detail or reason))

    async def expire_idle(self) -> None:
        """Close the sessions that have had no turn for ``idle_s`` (never one mid-turn)."""
        if self.idle_s is None:
            return
        now = time.monotonic()
        stale = [
            slot
            for slot in self._slots.values()
            if slot.session is not None
            and (since := slot.session.idle_since()) is not None
            and now - since >= self.idle_s
        ]
        for slot in stale:
            logger.bind(event="session_expired", kind=self.kind).info(
                f"{self.kind} session idle for {self.idle_s:g} s: closing it"
            )
            await self.close(slot, "idle", detail=f"idle for {self.idle_s:g} s")

    async def expire_forever(self) -> None:
        """Expire idle sessions every few seconds until cancelled (the server's lifespan)."""
        if self.idle_s is None:
            return
        period = max(0.1, min(self.idle_s / 4, 10.0))
        while True:
            await asyncio.sleep(period)
            try:
                await self.expire_idle()
            except Exception:
                logger.exception(f"expiring idle {self.kind} sessions failed")

    async def close_all(self, detail: str) -> None:
        """Close every session (the server is stopping; ``detail`` says so to waiting clients)."""
        for slot in list(self._slots.values()):
            await self.close(slot, "shutdown", detail=detail)

    def _retry_after(self) -> int:
        """Seconds until the next idle session expires, or :data:`RETRY_AFTER_S`."""
        if self.idle_s is None:
            return RETRY_AFTER_S
        idle = [
            since
            for slot in self._slots.values()
            if slot.session is not None and (since := slot.session.idle_since()) is not None
        ]
        if not idle:
            return RETRY_AFTER_S
        return max(1, math.ceil(min(idle) + self.idle_s - time.monotonic()))
