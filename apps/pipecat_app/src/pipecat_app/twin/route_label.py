"""The routing label: which expert answered a turn and why, for the user to see.

At the end of each turn an expert answered, :class:`TwinLLMProcessor
<pipecat_app.twin.service.TwinLLMProcessor>` pushes pipecat's
``RTVIServerMessageFrame`` with a :class:`RouteLabel` as its data. In a
voice session the RTVI observer sends it to the client as an RTVI
``server-message`` (``{"label": "rtvi-ai", "type": "server-message", "data":
{...}}``): the ``/voice`` page shows it beside the answer, pipecat's prebuilt
client lists it among its events. The text endpoint puts the same data in
its ``end`` message. A turn no expert answered (the apology) has no label.

Who: ``domain``, ``expert`` and ``node`` of the expert that answered. Why:
``reason`` is the router's (``rule``, ``similarity``, ``follow_up``, ``tie``,
``fallback``; see :mod:`~pipecat_app.twin.router`) or ``failover`` when
another expert failed the turn first (``failed`` names them, ``routed`` keeps
the router's reason). ``score``: the router's probability (0..1) for the
domain it chose; none for a rule. ``encoder``: which vectors gave the scores,
``embedding`` (the turn's sentence embedding) or ``tfidf`` (the fallback
while the model is not loaded); none for a rule.
"""

from __future__ import annotations

from typing import Literal, cast

from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pydantic import BaseModel

from pipecat_app.twin.discovery import Expert
from pipecat_app.twin.router import RouteDecision

#: The ``type`` of the label in the RTVI server message's data.
ROUTE_MESSAGE_TYPE = "twin-route"

Reason = Literal["rule", "similarity", "follow_up", "tie", "fallback", "failover"]


class RouteLabel(BaseModel):
    """Which expert answered a turn, why, and how long the answer took to start."""

    type: Literal["twin-route"] = ROUTE_MESSAGE_TYPE
    domain: str
    expert: str
    node: str
    reason: Reason
    routed: str
    score: float | None
    encoder: Literal["embedding", "tfidf"] | None = None
    failed: list[str]
    latency_ms: int | None
    answer_ms: int


def route_label(
    decision: RouteDecision,
    answered_by: Expert,
    failed: list[Expert],
    *,
    started: float,
    first_text: float | None,
    ended: float,
) -> RouteLabel:
    """The label of a turn ``answered_by`` answered after ``failed`` had failed it.

    Times are ``time.monotonic()``: ``started`` when the turn reached
    TwinService, ``first_text`` when its answer's first text left (None: the
    expert said nothing the user saw), ``ended`` when the answer ended. So
    ``latency_ms`` is recall, routing, the expert's time to first token and
    any failover; a spoken turn adds speech recognition before it and the
    first sentence's synthesis after it.
    """
    return RouteLabel(
        domain=answered_by.domain,
        expert=answered_by.name,
        node=answered_by.node,
        reason="failover" if failed else cast(Reason, decision.reason),
        routed=decision.reason,
        score=None if decision.reason == "rule" else round(decision.score, 3),
        encoder=decision.encoder,
        failed=[e.name for e in failed],
        latency_ms=None if first_text is None else round((first_text - started) * 1000),
        answer_ms=round((ended - started) * 1000),
    )


def route_message(label: RouteLabel) -> RTVIServerMessageFrame:
    """The label as the frame pipecat's RTVI observer sends to the client."""
    return RTVIServerMessageFrame(data=label.model_dump())
