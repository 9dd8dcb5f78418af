"""Mixture-of-experts routing: which expert answers this turn, and who is next if it fails.

Each domain is described by example utterances (the approach of
semantic-router): its experts' own ``examples`` and the app's own for a
well-known domain (:mod:`~pipecat_app.twin.domains`); a domain with neither
is described by its experts' descriptions. A turn is decided in this order:

1. ``rule``: the first config rule (regex -> domain) that matches, if an
   expert has that domain.
2. ``follow_up``: a turn with nothing of its own to go on ("why?", "and the
   second one?", "can you explain it again?": only stop words and words that
   point back), or a short one that opens as a continuation ("and the
   hallway?", "what about ...") with no domain reaching ``threshold``, stays
   with the previous turn's domain, for up to ``sticky_turns`` follow-ups in
   a row.
3. ``similarity``: the most likely domain (:class:`DomainIndex`: a logistic
   regression over the examples' :class:`~pipecat_app.twin.embedding.TextEncoder`
   vectors), when its probability reaches ``threshold`` and beats the
   runner-up by more than ``margin``.
4. ``tie``: two domains within ``margin`` of each other at the top (equal,
   by default) go to the default domain, never to the order of the expert list.
5. ``fallback``: no evidence for any domain goes to the default domain.

The decision carries the full failover order: the chosen expert, the other
instances of its domain, the default domain, then everyone else; experts
that failed recently go last. Routing reads the conversation's
:class:`RoutingState` and leaves it alone: the turn commits it once it has
ended (:meth:`RoutingState.commit`), with the expert that answered.

A rule or a default naming a domain no expert has cannot be followed; the
view of the cluster reports it (:func:`unroutable`) at start-up and in
``/health``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.linear_model import LogisticRegression

from pipecat_app.metrics import ROUTING_DECISIONS
from pipecat_app.twin.config import RoutingConfig
from pipecat_app.twin.discovery import Expert
from pipecat_app.twin.domains import DEFAULT_EXAMPLES
from pipecat_app.twin.embedding import TextEncoder, TfidfEncoder

_WORD = re.compile(r"[a-z]+")
# Words that point back at the previous turn; with scikit-learn's English stop
# words they make a turn with nothing of its own to go on.
_POINTING_BACK = frozenset(
    (
        "second", "third", "fourth", "last", "previous", "other", "ones", "explain",
        "elaborate", "simply", "simpler", "mean", "meant", "tell", "say", "said",
        "example", "examples", "really", "detail", "details",
    )
)  # fmt: skip
# A short turn that opens like this continues the previous one ("and the
# hallway?", "what about the left side?").
_CONTINUING = re.compile(r"^\W*(and|but|also|then|so|(what|how) about|what if)\b", re.IGNORECASE)
_FOLLOW_UP_MAX_WORDS = 8


def is_follow_up(text: str) -> bool:
    """True for a short turn made only of stop words and words that point back."""
    words = _WORD.findall(text.lower())
    return 0 < len(words) <= _FOLLOW_UP_MAX_WORDS and all(
        w in ENGLISH_STOP_WORDS or w in _POINTING_BACK for w in words
    )


def continues(text: str) -> bool:
    """True for a short turn that opens as a continuation ("and ...", "what about ...")."""
    return len(_WORD.findall(text.lower())) <= _FOLLOW_UP_MAX_WORDS and bool(
        _CONTINUING.match(text)
    )


def domain_examples(experts: Sequence[Expert]) -> dict[str, tuple[str, ...]]:
    """Each domain's example utterances: its experts' and the app's, else descriptions."""
    found: dict[str, list[str]] = {}
    described: dict[str, list[str]] = {}
    for expert in experts:
        mine = found.setdefault(expert.domain, [])
        mine.extend(e for e in expert.examples if e not in mine)
        if expert.description:
            described.setdefault(expert.domain, []).append(expert.description)
    for domain, mine in found.items():
        mine.extend(e for e in DEFAULT_EXAMPLES.get(domain, ()) if e not in mine)
    return {
        domain: tuple(examples or described.get(domain, [domain]))
        for domain, examples in sorted(found.items())
    }


class DomainIndex:
    """A classifier of turns into domains, trained on the domains' example utterances.

    The examples are encoded once (:class:`~pipecat_app.twin.embedding.TextEncoder`)
    and a logistic regression (scikit-learn) learns the domains from them; a
    turn's score for a domain is the probability it gives. A turn with nothing
    in common with any example gets about the same probability everywhere,
    so it stays below ``threshold``; one with no word or n-gram of any example
    scores 0.0.

    Args:
        examples: Example utterances per domain (:func:`domain_examples`).
        encoder: The encoder, fitted here on every domain's examples.
    """

    #: Inverse regularisation strength, chosen on the routing suite's tuning half.
    C = 3.0

    def __init__(
        self, examples: dict[str, tuple[str, ...]], encoder: TextEncoder | None = None
    ) -> None:
        self.domains = list(examples)
        texts = [text for domain in self.domains for text in examples[domain]]
        owner = [i for i, d in enumerate(self.domains) for _ in examples[d]]
        self._encoder = encoder or TfidfEncoder()
        self._encoder.fit(texts)
        self._classifier: LogisticRegression | None = None
        if len(self.domains) > 1:
            self._classifier = LogisticRegression(C=self.C, max_iter=1000)
            self._classifier.fit(self._encoder.encode(texts), owner)

    def scores(self, text: str) -> dict[str, float]:
        """Probability (0..1) of each domain for ``text``; one domain alone: 1.0.

        A turn with nothing in common with any example (an all-zero vector)
        is no evidence at all: 0.0 everywhere, not the classifier's prior.
        """
        if self._classifier is None:
            return dict.fromkeys(self.domains, 1.0)
        vector = self._encoder.encode([text])
        if not vector.count_nonzero():
            return dict.fromkeys(self.domains, 0.0)
        probabilities = self._classifier.predict_proba(vector)[0]
        return {d: float(p) for d, p in zip(self.domains, probabilities, strict=True)}


@lru_cache(maxsize=8)
def _shared_index(examples: tuple[tuple[str, tuple[str, ...]], ...]) -> DomainIndex:
    """One TF-IDF index per set of examples, shared by every conversation's router."""
    return DomainIndex(dict(examples))


def unroutable(config: RoutingConfig, experts: Sequence[Expert]) -> list[str]:
    """Problems: the default domain or a rule's domain that no expert has (none: [])."""
    if not experts:
        return []
    domains = sorted({e.domain for e in experts})
    have = ", ".join(domains)
    problems: list[str] = []
    if config.default_domain not in domains:
        problems.append(
            f"routing default_domain {config.default_domain!r} has no expert "
            f"(experts' domains: {have}); turns without evidence go to {domains[0]!r}"
        )
    for rule in config.rules:
        if rule.domain not in domains:
            problems.append(
                f"routing rule {rule.pattern!r} names domain {rule.domain!r}, which no "
                f"expert has (experts' domains: {have}); the rule is not followed"
            )
    return problems


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
    """Where one conversation's turns went: the expert, its domain, and follow-ups in a row.

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
        self.sticky_count = self.sticky_count + 1 if decision.reason == "follow_up" else 0
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
        encoder: Makes a fresh :class:`TextEncoder` for each set of examples;
            None: TF-IDF (:class:`~pipecat_app.twin.embedding.TfidfEncoder`),
            its index shared with every router of the process.
    """

    def __init__(
        self,
        config: RoutingConfig,
        *,
        cooldown_s: float = 30.0,
        encoder: type[TextEncoder] | None = None,
    ) -> None:
        self._config = config
        self._rules = [(re.compile(r.pattern), r.domain) for r in config.rules]
        self._cooldown_s = cooldown_s
        self._encoder = encoder
        self._down_until: dict[str, float] = {}
        self._index: DomainIndex | None = None
        self._index_key: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def _domain_index(self, experts: Sequence[Expert]) -> DomainIndex:
        key = tuple(domain_examples(experts).items())
        if self._index is None or key != self._index_key:
            self._index = (
                _shared_index(key)
                if self._encoder is None
                else DomainIndex(dict(key), self._encoder())
            )
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

    def _default(self, domains: set[str]) -> str:
        """The default domain; if no expert has it (reported by :func:`unroutable`), the first."""
        default = self._config.default_domain
        return default if default in domains else sorted(domains)[0]

    def classify(
        self, text: str, experts: Sequence[Expert], state: RoutingState | None = None
    ) -> tuple[str, str, float, dict[str, float]]:
        """(domain, reason, score, scores); reason: rule/follow_up/similarity/tie/fallback."""
        domains = {e.domain for e in experts}
        for pattern, domain in self._rules:
            if domain in domains and pattern.search(text):
                return domain, "rule", 1.0, {}
        scores = self._domain_index(experts).scores(text)
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        best_domain, best = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        can_stick = (
            state is not None
            and state.domain in domains
            and state.sticky_count < self._config.sticky_turns
        )
        if can_stick and (
            is_follow_up(text) or (continues(text) and best < self._config.threshold)
        ):
            previous = state.domain or ""
            return previous, "follow_up", scores.get(previous, 0.0), scores
        default = self._default(domains)
        if best < self._config.threshold:
            return default, "fallback", scores.get(default, 0.0), scores
        if best - runner_up <= self._config.margin or math.isclose(best, runner_up):
            return default, "tie", scores.get(default, 0.0), scores
        return best_domain, "similarity", best, scores

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
