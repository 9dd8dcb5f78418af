"""What the cluster offers now, followed once per process and read by every conversation.

A :class:`ClusterView` holds the experts (:class:`ExpertDirectory`), the
vision service (:class:`VisionDirectory`) and the system prompt
(:class:`PromptSource`), each followed by at most one Consul blocking query.
The server makes one per process and hands it to each conversation's
:class:`~pipecat_app.twin.service.TwinService`, so N browser tabs cost the
same Consul watches as one. Reads are snapshots in memory (no I/O in a turn).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from loguru import logger

from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.discovery import Expert, ExpertDirectory, VisionDirectory
from pipecat_app.twin.prompt import PromptSource
from pipecat_app.twin.router import unroutable


class ClusterHealth(NamedTuple):
    """Whether turns are answered as configured: ``("ok", [])``, or ``("degraded", reasons)``."""

    state: Literal["ok", "degraded"]
    reasons: list[str]


class ClusterView:
    """The experts, the vision service and the system prompt, for every conversation.

    Args:
        config: ``[twin]``: ``discovery``, ``experts``, ``prompt`` and
            ``tools`` (the vision service is followed only with tools on).

    Whoever makes it starts and stops it (the server: around its sessions;
    a lone TwinService: around itself).
    """

    def __init__(self, config: TwinConfig) -> None:
        self.experts = ExpertDirectory(
            config.discovery, config.experts, on_change=self._experts_changed
        )
        self._routing = config.routing
        self._reported: set[str] = set()
        self.vision = VisionDirectory(config.discovery, config.tools.vision_url)
        self.prompt = PromptSource(config.prompt, config.discovery)
        self._follow_vision = config.tools.enabled

    def _experts_changed(self, experts: list[Expert]) -> None:
        """Log each routing problem (a rule or default without experts) once."""
        for problem in unroutable(self._routing, experts):
            if problem not in self._reported:
                self._reported.add(problem)
                logger.warning(f"routing: {problem}")

    async def start(self) -> None:
        """Start discovery (experts, vision) and the prompt watch."""
        await self.experts.start()
        if self._follow_vision:
            await self.vision.start()
        await self.prompt.start()

    async def stop(self) -> None:
        """Stop every watch (each closes its HTTP client)."""
        await self.prompt.stop()
        await self.vision.stop()
        await self.experts.stop()

    def health(self) -> ClusterHealth:
        """The view's state, for the server's ``/health`` (snapshots, no I/O).

        Degraded, with one reason each, when no expert is known (every turn
        gets the apology), when expert discovery is failing (Consul
        unreachable or refusing: the set it reported last, or the configured
        fallback, serves), when the prompt watch is failing (the current
        prompt stays) and for each routing rule or default whose domain no
        expert has (:func:`~pipecat_app.twin.router.unroutable`).
        """
        reasons: list[str] = []
        if not self.experts.experts:
            reasons.append("no expert known")
        if self.experts.failing:
            reasons.append(f"expert discovery failing: {self.experts.last_error}")
        if self.prompt.failing:
            reasons.append(f"prompt watch failing: {self.prompt.last_error}")
        reasons.extend(unroutable(self._routing, self.experts.experts))
        return ClusterHealth("degraded" if reasons else "ok", reasons)
