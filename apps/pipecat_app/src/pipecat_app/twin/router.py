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
   regression over the examples' vectors), when its probability reaches
   ``threshold`` and beats the runner-up by more than ``margin``, and the
   turn is about as close to one of that domain's examples as
   :attr:`Fit.min_similarity` asks (else it is no evidence: "Thanks!").
4. ``tie``: two domains within ``margin`` of each other at the top (equal,
   by default) go to the default domain, never to the order of the expert list.
5. ``fallback``: no evidence for any domain goes to the default domain.

The decision carries the full failover order: the chosen expert, the other
instances of its domain, the default domain, then everyone else; experts
that failed recently go last. Routing reads the conversation's
:class:`RoutingState` and leaves it alone: the turn commits it once it has
ended (:meth:`RoutingState.commit`), with the expert that answered.

Which vectors decide (``RouteDecision.encoder``): the turn's sentence
embedding (all-MiniLM-L6-v2, :mod:`~pipecat_app.twin.embedding`), the same one
memory recall uses (:class:`TurnEmbedder`: the memory store embeds a turn
once and keeps the vector), with the examples embedded once per set of
examples on a background thread (:func:`embedded_index`); until the model is
loaded and the examples embedded, or if either fails, TF-IDF over words and
character n-grams (:class:`~pipecat_app.twin.embedding.TfidfEncoder`) decides.

A rule or a default naming a domain no expert has cannot be followed; the
view of the cluster reports it (:func:`unroutable`) at start-up and in
``/health``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

import numpy as np
from loguru import logger
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.linear_model import LogisticRegression

from pipecat_app.metrics import ROUTING_DECISIONS
from pipecat_app.twin.config import RoutingConfig
from pipecat_app.twin.discovery import Expert
from pipecat_app.twin.domains import DEFAULT_EXAMPLES
from pipecat_app.twin.embedding import Embedder, TfidfEncoder, cosine

Encoding = Literal["embedding", "tfidf"]
Examples = tuple[tuple[str, tuple[str, ...]], ...]

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


@dataclass(frozen=True)
class Fit:
    """How a :class:`DomainIndex` is fitted, per kind of vector (chosen on the suite's tuning half).

    Attributes:
        C: The logistic regression's inverse regularisation strength.
        min_similarity: Cosine similarity to the nearest example of the most
            likely domain at or below which a turn is no evidence for any domain.
    """

    C: float
    min_similarity: float


#: TF-IDF vectors (words + character n-grams): a turn sharing no word or
#: n-gram with the domain's examples is no evidence.
TFIDF_FIT = Fit(C=3.0, min_similarity=0.0)
#: Sentence embeddings (all-MiniLM-L6-v2): "Thanks!" or "blah blah" are about
#: 0.25 from every example, a question of a domain 0.4 and more from its nearest.
EMBEDDING_FIT = Fit(C=1.0, min_similarity=0.25)


class DomainIndex:
    """A classifier of turns into domains, trained on the domains' example utterances.

    The examples are encoded once (``encode``) and a logistic regression
    (scikit-learn) learns the domains from them; a turn's score for a domain
    is the probability it gives. A turn no closer than ``fit.min_similarity``
    to any example of its most likely domain is no evidence at all: 0.0
    everywhere, not the classifier's guess (a turn with nothing in common with
    the examples still gets a probability for each domain, and one of them is
    the highest).

    Args:
        examples: Example utterances per domain (:func:`domain_examples`).
        encode: Texts to L2-normalised rows (an encoder's ``encode``, fitted
            on these examples if it learns from them).
        fit: The classifier's regularisation and the evidence floor.
    """

    def __init__(
        self,
        examples: dict[str, tuple[str, ...]],
        encode: Callable[[Sequence[str]], Any],
        fit: Fit,
    ) -> None:
        self.domains = list(examples)
        texts = [text for domain in self.domains for text in examples[domain]]
        self._owner = np.array([i for i, d in enumerate(self.domains) for _ in examples[d]])
        self._encode = encode
        self._fit = fit
        self._examples = encode(texts)
        self._classifier: LogisticRegression | None = None
        if len(self.domains) > 1:
            self._classifier = LogisticRegression(C=fit.C, max_iter=1000)
            self._classifier.fit(self._examples, self._owner)

    def scores(self, text: str) -> dict[str, float]:
        """Probability (0..1) of each domain for ``text``; one domain alone: 1.0."""
        return self.scores_of(self._encode([text]))

    def scores_of(self, vector: Any) -> dict[str, float]:
        """:meth:`scores` of a turn already encoded (one row, or a 1-D dense vector)."""
        if self._classifier is None:
            return dict.fromkeys(self.domains, 1.0)
        if isinstance(vector, np.ndarray) and vector.ndim == 1:
            vector = vector[None, :]
        probabilities = self._classifier.predict_proba(vector)[0]
        best = int(np.argmax(probabilities))
        nearest = cosine(vector, self._examples)[0][self._owner == best].max()
        if nearest <= self._fit.min_similarity:
            return dict.fromkeys(self.domains, 0.0)
        return {d: float(p) for d, p in zip(self.domains, probabilities, strict=True)}


def _key(experts: Sequence[Expert]) -> Examples:
    """The experts' examples per domain, hashable: what an index is built from."""
    return tuple(domain_examples(experts).items())


@lru_cache(maxsize=8)
def _shared_index(examples: Examples) -> DomainIndex:
    """One TF-IDF index per set of examples, shared by every conversation's router."""
    encoder = TfidfEncoder()
    encoder.fit([text for _, texts in examples for text in texts])
    return DomainIndex(dict(examples), encoder.encode, TFIDF_FIT)


class TurnEmbedder(Protocol):
    """The turn's one sentence embedding (:class:`~pipecat_app.twin.memory.MemoryStore`).

    ``encoder`` is None until the model is loaded; ``embed_query`` keeps the
    last text's vector, so routing and recall embed a turn once.
    """

    @property
    def encoder(self) -> Embedder | None:
        """The loaded sentence encoder, or None."""

    def embed_query(self, text: str) -> np.ndarray | None:
        """The text's vector (None while the encoder is not loaded)."""


# The examples are embedded off the turn path, once per set of examples and
# model in the process (a refresh that changes the experts' examples embeds
# the new set); routing uses TF-IDF until that is done.
_EMBEDDING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router-examples")
_EMBEDDED: dict[tuple[Examples, str], Future[DomainIndex]] = {}
_EMBEDDED_LOCK = threading.Lock()


def _embed_examples(examples: Examples, encoder: Embedder) -> DomainIndex:
    started = time.perf_counter()
    try:
        index = DomainIndex(dict(examples), encoder.encode, EMBEDDING_FIT)
    except Exception as exc:
        logger.error(f"routing: embedding the domains' examples failed ({exc}); routing by TF-IDF")
        raise
    count = sum(len(e) for _, e in examples)
    logger.info(
        f"routing: {count} example utterances embedded with {encoder.model} "
        f"in {time.perf_counter() - started:.2f} s; routing by embedding"
    )
    return index


def embedded_index(examples: Examples, encoder: Embedder) -> Future[DomainIndex]:
    """The index of ``examples`` embedded by ``encoder``: started once, on a background thread."""
    key = (examples, encoder.model)
    with _EMBEDDED_LOCK:
        future = _EMBEDDED.get(key)
        if future is None:
            while len(_EMBEDDED) >= 8:  # sets of examples seen before a refresh
                del _EMBEDDED[next(iter(_EMBEDDED))]
            future = _EMBEDDED[key] = _EMBEDDING.submit(_embed_examples, examples, encoder)
    return future


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
    #: Which vectors gave the scores (None: a rule decided, nothing was compared).
    encoder: Encoding | None = None

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
        embedder: The turn's sentence embedding (the memory store's, so
            routing and recall share it); None, or while its encoder is not
            loaded: TF-IDF.
    """

    def __init__(
        self,
        config: RoutingConfig,
        *,
        cooldown_s: float = 30.0,
        embedder: TurnEmbedder | None = None,
    ) -> None:
        self._config = config
        self._rules = [(re.compile(r.pattern), r.domain) for r in config.rules]
        self._cooldown_s = cooldown_s
        self._embedder = embedder
        self._down_until: dict[str, float] = {}

    def _embedded(self, key: Examples) -> DomainIndex | None:
        """The embedded examples' index once ready (embedding them starts here), else None."""
        encoder = self._embedder.encoder if self._embedder is not None else None
        if encoder is None:
            return None
        future = embedded_index(key, encoder)
        if not future.done() or future.exception() is not None:
            return None
        return future.result()

    def prepare(self, experts: Sequence[Expert], timeout: float | None = None) -> Encoding:
        """Wait (up to ``timeout``) for the experts' examples to be embedded; which will decide."""
        encoder = self._embedder.encoder if self._embedder is not None else None
        if encoder is not None:
            future = embedded_index(_key(experts), encoder)
            try:
                future.result(timeout)
            except Exception:  # logged where it failed; TF-IDF decides
                return "tfidf"
            return "embedding"
        return "tfidf"

    def _scores(self, text: str, experts: Sequence[Expert]) -> tuple[dict[str, float], Encoding]:
        """Each domain's score for ``text``, by the turn's embedding when it can, else TF-IDF."""
        key = _key(experts)
        index = self._embedded(key)
        if index is not None and self._embedder is not None:
            vector = self._embedder.embed_query(text)
            if vector is not None:
                return index.scores_of(vector), "embedding"
        return _shared_index(key).scores(text), "tfidf"

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
    ) -> tuple[str, str, float, dict[str, float], Encoding | None]:
        """(domain, reason, score, scores, encoder).

        reason: rule/follow_up/similarity/tie/fallback; encoder: which vectors
        gave the scores (:attr:`RouteDecision.encoder`).
        """
        domains = {e.domain for e in experts}
        for pattern, domain in self._rules:
            if domain in domains and pattern.search(text):
                return domain, "rule", 1.0, {}, None
        scores, encoder = self._scores(text, experts)
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
            return previous, "follow_up", scores.get(previous, 0.0), scores, encoder
        default = self._default(domains)
        if best < self._config.threshold:
            return default, "fallback", scores.get(default, 0.0), scores, encoder
        if best - runner_up <= self._config.margin or math.isclose(best, runner_up):
            return default, "tie", scores.get(default, 0.0), scores, encoder
        return best_domain, "similarity", best, scores, encoder

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
        domain, reason, score, scores, encoder = self.classify(text, experts, state)
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
        return RouteDecision(
            order=order, reason=reason, domain=domain, score=score, scores=scores, encoder=encoder
        )
