"""Mixture-of-experts routing: which expert answers this turn, and who is next if it fails.

A fast classifier, no model: config rules (regex -> domain) first, then a
lexical similarity between the turn and each domain's expert descriptions.
The similarity is the share of the turn's *informative* words (those that
appear in any description, weighted by inverse document frequency across
the descriptions) that belong to a domain, so words no expert knows do not
dilute it. Below ``threshold`` the turn goes to the default (general)
domain, unless the conversation is sticky: it stays with its expert for up
to ``sticky_turns`` turns while nothing points elsewhere.

The decision carries the full failover order: the chosen expert, the other
instances of its domain, the default domain, then everyone else; experts
that failed recently go last. Routing reads the conversation's
:class:`RoutingState` and leaves it alone: the turn commits it once it has
ended (:meth:`RoutingState.commit`), with the expert that answered.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipecat_app.metrics import ROUTING_DECISIONS
from pipecat_app.twin.config import RoutingConfig
from pipecat_app.twin.discovery import Expert

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    re.split(
        r"\s+",
        """
    a an and are as at be but by can could do does for from had has have how i if in into is
    it its me my of on or our so that the their them then there these this to was we were
    what when where which who why will with would you your please tell about some any just
    also like want need know
""".strip(),
    )
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ers", "er", "ed", "es", "ly", "s")


def stem(word: str) -> str:
    """A crude suffix stripper so "debugging"/"debug" and "recipes"/"recipe" meet."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2]:
        word = word[:-1]
    if len(word) > 3 and word[-1] == "e":
        word = word[:-1]
    return word


def terms(text: str) -> set[str]:
    """Stemmed, lower-cased informative words of a text."""
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


class DomainIndex:
    """Per-domain term sets with IDF weights, built from the experts' descriptions."""

    def __init__(self, experts: Sequence[Expert]) -> None:
        self.domains: dict[str, set[str]] = {}
        for expert in experts:
            words = terms(f"{expert.domain} {expert.description}")
            self.domains.setdefault(expert.domain, set()).update(words)
        n = max(1, len(self.domains))
        counts: dict[str, int] = {}
        for words in self.domains.values():
            for word in words:
                counts[word] = counts.get(word, 0) + 1
        # Smoothed IDF: a word every domain uses still counts a little.
        self.idf = {w: math.log(1 + n / c) for w, c in counts.items()}

    def scores(self, text: str) -> dict[str, float]:
        """Similarity (0..1) of ``text`` to each domain."""
        known = [w for w in terms(text) if w in self.idf]
        total = sum(self.idf[w] for w in known)
        if total == 0:
            return dict.fromkeys(self.domains, 0.0)
        return {
            domain: sum(self.idf[w] for w in known if w in words) / total
            for domain, words in self.domains.items()
        }


@dataclass(frozen=True)
class RouteDecision:
    """Where a turn goes: ``order[0]`` first, the rest in failover order."""

    order: list[Expert]
    reason: str
    domain: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def expert(self) -> Expert:
        """The chosen expert."""
        return self.order[0]


@dataclass
class RoutingState:
    """Where one conversation's turns went: the expert, its domain, and turns kept by stickiness.

    :meth:`Router.route` reads it and :meth:`commit` alone changes it, once a
    routed turn has ended.
    """

    expert: str | None = None
    domain: str | None = None
    sticky_count: int = 0

    def commit(self, decision: RouteDecision, answered_by: Expert | None = None) -> None:
        """Record a routed turn: the next turns stay with the expert that answered it.

        Args:
            decision: The turn's routing decision.
            answered_by: The expert that answered, after any failover; None
                (no expert answered, or the turn was interrupted) keeps the
                decision's first choice.
        """
        self.sticky_count = self.sticky_count + 1 if decision.reason == "sticky" else 0
        expert = answered_by or decision.expert
        self.expert = expert.name
        self.domain = expert.domain


class NoExpertsError(RuntimeError):
    """No expert is known (empty static list, or Consul has none yet)."""


class Router:
    """Routes turns to experts; remembers failures for ``cooldown_s`` seconds.

    Args:
        config: ``[twin.routing]``.
        cooldown_s: How long a failed expert goes to the back of the order.
    """

    def __init__(self, config: RoutingConfig, *, cooldown_s: float = 30.0) -> None:
        self._config = config
        self._rules = [(re.compile(r.pattern), r.domain) for r in config.rules]
        self._cooldown_s = cooldown_s
        self._down_until: dict[str, float] = {}
        self._index: DomainIndex | None = None
        self._index_key: tuple[Expert, ...] = ()

    def _domain_index(self, experts: Sequence[Expert]) -> DomainIndex:
        key = tuple(experts)
        if self._index is None or key != self._index_key:
            self._index = DomainIndex(experts)
            self._index_key = key
        return self._index

    def mark_failed(self, expert: Expert, *, now: float | None = None) -> None:
        """Send ``expert`` to the back of every order for the cooldown."""
        self._down_until[expert.name] = (
            time.monotonic() if now is None else now
        ) + self._cooldown_s

    def mark_ok(self, expert: Expert) -> None:
        """Forget a past failure of ``expert`` (it answered)."""
        self._down_until.pop(expert.name, None)

    def is_down(self, expert: Expert, *, now: float | None = None) -> bool:
        """True while ``expert`` is in its failure cooldown."""
        until = self._down_until.get(expert.name)
        return until is not None and (time.monotonic() if now is None else now) < until

    def classify(
        self, text: str, experts: Sequence[Expert], state: RoutingState | None = None
    ) -> tuple[str, str, float, dict[str, float]]:
        """(domain, reason, score, scores) for a turn; reason: rule/similarity/sticky/fallback."""
        domains = {e.domain for e in experts}
        for pattern, domain in self._rules:
            if domain in domains and pattern.search(text):
                return domain, "rule", 1.0, {}
        scores = self._domain_index(experts).scores(text)
        best_domain, best = max(
            scores.items(),
            key=lambda kv: (kv[1], kv[0] == self._config.default_domain),
            default=("", 0.0),
        )
        if best >= self._config.threshold and best_domain:
            return best_domain, "similarity", best, scores
        if (
            state is not None
            and state.domain in domains
            and state.sticky_count < self._config.sticky_turns
        ):
            return (
                state.domain or "",
                "sticky",
                scores.get(state.domain or "", 0.0),
                scores,
            )
        default = self._config.default_domain
        if default not in domains:
            default = sorted(domains)[0]
        return default, "fallback", scores.get(default, 0.0), scores

    def route(
        self,
        text: str,
        experts: Sequence[Expert],
        state: RoutingState | None = None,
        *,
        now: float | None = None,
    ) -> RouteDecision:
        """Route one turn; ``state`` is read, not changed (:meth:`RoutingState.commit`)."""
        if not experts:
            raise NoExpertsError("no experts are available")
        domain, reason, score, scores = self.classify(text, experts, state)
        now = time.monotonic() if now is None else now
        preferred = state.expert if state is not None else None

        def rank(expert: Expert) -> tuple[int, int, int, float, str]:
            tier = (
                0
                if expert.domain == domain
                else (1 if expert.domain == self._config.default_domain else 2)
            )
            return (
                1 if self.is_down(expert, now=now) else 0,
                tier,
                0 if expert.name == preferred else 1,
                -scores.get(expert.domain, 0.0),
                expert.name,
            )

        order = sorted(experts, key=rank)
        ROUTING_DECISIONS.labels(expert=order[0].name, reason=reason).inc()
        return RouteDecision(order=order, reason=reason, domain=domain, score=score, scores=scores)
