"""Prometheus metrics of the assistant, served on ``/metrics``.

One registry for the whole app so tests can read values without global state
from other tests leaking in (``REGISTRY`` is passed to every metric).
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets from 25 ms to 10 s: voice turns live between 0.2 and 3 s.
_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

TURN_LATENCY = Histogram(
    "twin_turn_latency_seconds",
    "End of the user's speech (or text turn) to the first audio (or text) of the answer.",
    buckets=_BUCKETS,
    registry=REGISTRY,
)
TURN_STAGE = Histogram(
    "twin_turn_stage_seconds",
    "Per-turn time spent in one stage: stt, llm_ttfb (LLM time to first token), tts_ttfb.",
    ["stage"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
ROUTING_DECISIONS = Counter(
    "twin_routing_decisions_total",
    "Turns routed to an expert, by expert and reason"
    " (rule, similarity, sticky, fallback, failover).",
    ["expert", "reason"],
    registry=REGISTRY,
)
EXPERT_ERRORS = Counter(
    "twin_expert_errors_total",
    "Expert requests that failed, by expert and kind (timeout, connect, http,"
    " invalid: not a chat-completion stream, empty: no text and no tool call).",
    ["expert", "kind"],
    registry=REGISTRY,
)
EXPERTS_AVAILABLE = Gauge(
    "twin_experts_available",
    "Experts a turn can use now: Consul's healthy set, or the configured ones"
    " (static mode, or the fallback while Consul has reported none).",
    registry=REGISTRY,
)
DISCOVERY_ERRORS = Counter(
    "twin_discovery_errors_total",
    "Failed Consul discovery requests (the last known expert set stays in use).",
    registry=REGISTRY,
)
SPECULATIONS = Counter(
    "twin_speculations_total",
    "Speculative turns (answered at a short pause, before the turn ended) by outcome:"
    " confirmed (the answer was used), withdrawn (the user went on), tool (it wanted"
    " a tool or the scene, so it was withdrawn and the turn answered again).",
    ["outcome"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "twin_tool_calls_total",
    "Tool calls by tool and outcome (ok, invalid_arguments, error).",
    ["tool", "outcome"],
    registry=REGISTRY,
)
MEMORY_ERRORS = Counter(
    "twin_memory_errors_total",
    "Memory store failures; the conversation goes on without memory.",
    registry=REGISTRY,
)
SESSIONS_ACTIVE = Gauge(
    "twin_sessions_active",
    "Sessions holding a slot under their cap (reserved or running), by kind (voice, text).",
    ["kind"],
    registry=REGISTRY,
)
SESSIONS_REJECTED = Counter(
    "twin_sessions_rejected_total",
    "Offers, requests and websocket messages refused, by kind (voice, text) and reason"
    " (full, invalid, too_large, unknown_session, closed).",
    ["kind", "reason"],
    registry=REGISTRY,
)
SESSIONS_CLOSED = Counter(
    "twin_sessions_closed_total",
    "Sessions ended, by kind (voice, text) and reason"
    " (left, idle, never_connected, abandoned, refused, failed, shutdown).",
    ["kind", "reason"],
    registry=REGISTRY,
)
