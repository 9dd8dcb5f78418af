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

from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.discovery import ExpertDirectory, VisionDirectory
from pipecat_app.twin.prompt import PromptSource


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
        self.experts = ExpertDirectory(config.discovery, config.experts)
        self.vision = VisionDirectory(config.discovery, config.tools.vision_url)
        self.prompt = PromptSource(config.prompt, config.discovery)
        self._follow_vision = config.tools.enabled

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
        fallback, serves) and when the prompt watch is failing (the current
        prompt stays).
        """
        reasons: list[str] = []
        if not self.experts.experts:
            reasons.append("no expert known")
        if self.experts.failing:
            reasons.append(f"expert discovery failing: {self.experts.last_error}")
        if self.prompt.failing:
            reasons.append(f"prompt watch failing: {self.prompt.last_error}")
        return ClusterHealth("degraded" if reasons else "ok", reasons)
