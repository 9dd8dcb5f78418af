"""Where the experts and the vision service are: config, or Consul followed in the background.

In ``consul`` mode a :class:`~pipecat_app.twin.consul_watch.BlockingWatch`
follows ``/v1/health/service/<service>?passing=true``; each change replaces
the known set. A turn only ever reads :attr:`ExpertDirectory.experts` (a
snapshot in memory), so no Consul request sits on a turn's path. When
Consul is unreachable the last set it reported stays in use, and the error
is logged and counted (``DISCOVERY_ERRORS``). While Consul has reported no
healthy expert (unreachable since start, or none registered), the configured
``[[twin.experts]]`` serve instead: a fallback, never merged with Consul's
set.

The vision service ``describe_scene`` calls is found the same way
(:class:`VisionDirectory`): ``twin.tools.vision_url``, else the healthy
instances of ``twin.discovery.vision_service`` followed in Consul. Whether a
turn offers ``describe_scene`` (or ``cluster_status``, which needs Consul to
answer) is read from these snapshots too.

Service metadata the expert jobs register (``ServiceMeta``, all strings):
``domain``, ``description``, ``model``, ``context_length``, ``tool_calls``
(``"true"``/``"false"``) and optionally ``base_path`` (default ``/v1``),
``scheme`` (``http`` or ``https``, default ``http``; the vision job writes
``https`` when it serves TLS) and ``example_1`` ... ``example_N`` (the
domain's example utterances, in order, N <= 16). An ``https`` service's
certificate is verified against ``twin.discovery.ca_file``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from loguru import logger

from pipecat_app.metrics import DISCOVERY_ERRORS, EXPERTS_AVAILABLE
from pipecat_app.twin.config import DiscoveryConfig, ExpertConfig
from pipecat_app.twin.consul_watch import BlockingWatch, Followed, OnChange, OnError


@dataclass(frozen=True)
class Expert:
    """One LLM endpoint the router may send turns to."""

    name: str
    domain: str
    description: str
    base_url: str
    model: str = "default"
    context_length: int = 2048
    tool_calls: bool = False
    api_key: str = "none"
    examples: tuple[str, ...] = ()
    #: Where it runs: the Consul node; for a configured expert, its URL's host.
    node: str = ""

    @classmethod
    def from_config(cls, cfg: ExpertConfig) -> Expert:
        """An expert from a ``[[twin.experts]]`` entry."""
        return cls(
            name=cfg.name,
            domain=cfg.domain,
            description=cfg.description,
            base_url=cfg.base_url.rstrip("/"),
            model=cfg.model,
            context_length=cfg.context_length,
            tool_calls=cfg.tool_calls,
            api_key=cfg.api_key,
            examples=tuple(cfg.examples),
            node=urlsplit(cfg.base_url).hostname or "",
        )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _examples(meta: dict[str, str]) -> tuple[str, ...]:
    """``example_1`` ... ``example_N`` in order, up to the first one missing (N <= 16)."""
    found: list[str] = []
    for i in range(1, 17):
        value = (meta.get(f"example_{i}") or "").strip()
        if not value:
            break
        found.append(value)
    return tuple(found)


def experts_from_health(entries: Sequence[dict[str, Any]]) -> list[Expert]:
    """Experts from a ``/v1/health/service/<name>`` response (passing instances only).

    Entries with any non-passing check are left out too, in case the query
    was made without ``passing``. Entries without a usable address are skipped
    with a warning.
    """
    experts: list[Expert] = []
    for entry in entries:
        service = entry.get("Service") or {}
        node = entry.get("Node") or {}
        checks = entry.get("Checks") or []
        if any(c.get("Status") != "passing" for c in checks):
            continue
        address = service.get("Address") or node.get("Address")
        port = service.get("Port")
        if not address or not port:
            logger.warning(f"discovery: {service.get('ID')!r} has no address/port, skipped")
            continue
        meta = service.get("Meta") or {}
        scheme = (meta.get("scheme") or "http").strip().lower()
        if scheme not in ("http", "https"):
            logger.warning(
                f"discovery: {service.get('ID')!r} has meta scheme {scheme!r}, "
                "not http or https, skipped"
            )
            continue
        try:
            context_length = int(meta.get("context_length") or 2048)
        except ValueError:
            context_length = 2048
        host = f"[{address}]" if ":" in address else address
        base_path = "/" + (meta.get("base_path") or "/v1").strip("/")
        experts.append(
            Expert(
                name=service.get("ID") or f"{service.get('Service')}-{address}-{port}",
                domain=meta.get("domain") or "general",
                description=meta.get("description") or "",
                base_url=f"{scheme}://{host}:{port}{base_path}",
                model=meta.get("model") or "default",
                context_length=context_length,
                tool_calls=_truthy(meta.get("tool_calls")),
                examples=_examples(meta),
                node=node.get("Node") or address,
            )
        )
    experts.sort(key=lambda e: e.name)
    return experts


def health_watch(
    config: DiscoveryConfig, service: str, on_change: OnChange, on_error: OnError
) -> BlockingWatch:
    """A blocking-query watch on the passing instances of ``service`` (not started)."""
    return BlockingWatch(
        config.resolved_consul_addr(),
        config.resolved_consul_token(),
        f"/v1/health/service/{service}",
        params={"passing": "true"},
        wait=config.wait,
        retry_s=config.retry_s,
        on_change=on_change,
        on_error=on_error,
        tls=config.consul_tls(),
    )


class ExpertDirectory(Followed):
    """The experts a turn can use now: configured, or followed in Consul.

    ``static`` mode: the configured experts. ``consul`` mode: the healthy
    experts Consul reported last; while it has reported none (unreachable
    since start, or no healthy instance), the configured experts, as a
    fallback that is never merged with Consul's set. Consul becoming
    unreachable keeps the set it reported last. ``EXPERTS_AVAILABLE`` is
    the number of experts a turn can use.

    Args:
        config: ``[twin.discovery]``.
        configured: ``[[twin.experts]]``.
        on_change: Called with the new list whenever it changes.
    """

    def __init__(
        self,
        config: DiscoveryConfig,
        configured: Sequence[ExpertConfig] = (),
        *,
        on_change: Callable[[list[Expert]], None] | None = None,
    ) -> None:
        self._config = config
        self._configured = [Expert.from_config(e) for e in configured]
        self._discovered: list[Expert] = []
        self._experts: list[Expert] = []
        self._on_change = on_change

    @property
    def experts(self) -> list[Expert]:
        """Snapshot of the experts a turn can use now (no I/O)."""
        return list(self._experts)

    @property
    def consul_answering(self) -> bool:
        """Whether discovery follows Consul and Consul answered its last request."""
        return self._watch is not None and self._watch.answering

    def _publish(self) -> None:
        experts = self._discovered or self._configured
        changed = experts != self._experts
        self._experts = experts
        EXPERTS_AVAILABLE.set(len(experts))
        if not changed:
            return
        names = [e.name for e in experts]
        if self._config.mode == "static":
            logger.info(f"discovery: experts now {names}")
        elif self._discovered:
            logger.info(f"discovery: experts now {names}, from Consul")
        else:
            logger.warning(
                f"discovery: Consul has reported no healthy {self._config.service!r} "
                f"expert; the configured fallback serves: {names}"
            )
        if self._on_change is not None:
            self._on_change(list(experts))

    def _health_changed(self, body: Any) -> None:
        self._discovered = experts_from_health(body or [])
        self._publish()

    def _failed(self, exc: Exception) -> None:
        DISCOVERY_ERRORS.inc()
        kept = "the set it reported last" if self._discovered else "the configured fallback"
        logger.error(
            f"discovery: Consul at {self._config.resolved_consul_addr()} failed "
            f"({self.last_error or exc}); {len(self._experts)} expert(s) serve, {kept}"
        )

    async def start(self) -> None:
        """Publish the configured experts; in ``consul`` mode, start following Consul too."""
        self._publish()
        if self._config.mode == "consul":
            self._follow(
                health_watch(self._config, self._config.service, self._health_changed, self._failed)
            )


class VisionDirectory(Followed):
    """Where the vision service is: configured, or the first healthy one in Consul.

    ``twin.tools.vision_url`` when it is set. Otherwise, in ``consul`` mode, a
    :class:`~pipecat_app.twin.consul_watch.BlockingWatch` follows the healthy
    instances of ``twin.discovery.vision_service``; like the experts, the last
    known one stays while Consul is unreachable. In ``static`` mode without a
    URL there is none.

    Args:
        config: ``[twin.discovery]``.
        url: ``twin.tools.vision_url`` (empty: find the service in Consul).
    """

    def __init__(self, config: DiscoveryConfig, url: str = "") -> None:
        self._config = config
        self._configured = url.rstrip("/")
        self._found: str | None = None

    @property
    def url(self) -> str | None:
        """The vision service's base URL now (no I/O); None while there is none."""
        return self._configured or self._found

    def _health_changed(self, body: Any) -> None:
        found = experts_from_health(body or [])
        url = found[0].base_url.removesuffix("/v1") if found else None
        if url != self._found:
            logger.info(f"discovery: vision service now {url or 'absent'}")
        self._found = url

    def _failed(self, exc: Exception) -> None:
        logger.error(
            f"discovery: Consul failed following {self._config.vision_service!r} "
            f"({self.last_error or exc}); keeping {self._found or 'no vision service'}"
        )

    async def start(self) -> None:
        """Consul mode without a URL: start the background blocking-query watch."""
        if self._configured or self._config.mode != "consul":
            return
        self._follow(
            health_watch(
                self._config, self._config.vision_service, self._health_changed, self._failed
            )
        )
