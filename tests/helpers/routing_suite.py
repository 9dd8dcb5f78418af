"""The routing suite and the example inventory's experts, for the router's test and benchmark.

``benchmarks/data/routing_suite.json`` holds conversations of labelled turns
(general, code, home, vision; follow-ups labelled with the domain they
follow; turns that belong to no expert labelled with the default domain),
each conversation in the ``tune`` or the ``test`` half. :func:`run_suite`
plays every conversation through a router as TwinService would: each turn
is routed with the conversation's state, then committed as answered by the
chosen expert. :class:`SentenceEmbedder` gives a router the turn's sentence
embedding as TwinService's memory store does (the model loaded at once).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pipecat_app.twin.config import RoutingConfig
from pipecat_app.twin.discovery import Expert
from pipecat_app.twin.embedding import SentenceEncoder, sentence_encoder

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "data" / "routing_suite.json"
INVENTORY_EXPERTS = ROOT / "inventory" / "example" / "group_vars" / "all" / "experts.yml"
ROLE_DEFAULTS = ROOT / "roles" / "pipecat_app" / "defaults" / "main.yml"


@dataclass(frozen=True)
class Turn:
    """One labelled turn: what the user said, the domain that should answer, and its place."""

    text: str
    domain: str
    conversation: int
    index: int


def conversations(split: str, path: Path = SUITE) -> list[list[Turn]]:
    """The suite's conversations of one half (``tune`` or ``test``)."""
    data = json.loads(path.read_text())
    return [
        [Turn(text, domain, c, i) for i, (text, domain) in enumerate(conv["turns"])]
        for c, conv in enumerate(data["conversations"])
        if conv["split"] == split
    ]


def example_experts(path: Path = INVENTORY_EXPERTS) -> list[Expert]:
    """The example inventory's experts as discovery would see them (meta -> Expert)."""
    experts = yaml.safe_load(path.read_text())["prima_cpp_experts"]
    return [
        Expert(
            name=e["name"],
            domain=e.get("domain", "general"),
            description=e.get("description", ""),
            base_url=f"http://{e['name']}.invalid/v1",
            examples=tuple(e.get("examples") or ()),
        )
        for e in experts
    ]


def role_routing(path: Path = ROLE_DEFAULTS) -> RoutingConfig:
    """``[twin.routing]`` as the pipecat_app role renders it by default."""
    return RoutingConfig(**yaml.safe_load(path.read_text())["pipecat_app_routing"])


class SentenceEmbedder:
    """A router's :class:`~pipecat_app.twin.router.TurnEmbedder`: the process's sentence encoder.

    ``calls`` counts the texts embedded for turns.
    """

    def __init__(self) -> None:
        self.encoder: SentenceEncoder | None = sentence_encoder()
        self.calls = 0

    def embed_query(self, text: str) -> np.ndarray | None:
        """The text's vector."""
        if self.encoder is None:
            return None
        self.calls += 1
        return self.encoder.encode([text])[0]


@dataclass(frozen=True)
class Outcome:
    """One routed turn of the suite."""

    turn: Turn
    domain: str
    reason: str
    score: float

    @property
    def right(self) -> bool:
        """Whether the turn reached an expert of its labelled domain."""
        return self.domain == self.turn.domain


def run_suite(
    router: Any,
    experts: Sequence[Expert],
    convs: Sequence[Sequence[Turn]],
    *,
    state_factory: Callable[[], Any],
) -> list[Outcome]:
    """Route every turn of ``convs``, committing each decision to its conversation's state."""
    outcomes: list[Outcome] = []
    for conv in convs:
        state = state_factory()
        for turn in conv:
            decision = router.route(turn.text, experts, state)
            state.commit(decision)
            outcomes.append(Outcome(turn, decision.expert.domain, decision.reason, decision.score))
    return outcomes


def accuracy(outcomes: Sequence[Outcome]) -> float:
    """Share of turns that reached an expert of their labelled domain."""
    return sum(o.right for o in outcomes) / len(outcomes)
