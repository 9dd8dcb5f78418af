"""The cluster's experts as the evaluation's endpoints, found through Consul by the app's own code.

One request, not a watch: :func:`pipecat_app.twin.discovery.health_watch`
(the query TwinService follows, ``/v1/health/service/<service>?passing=true``,
with ``[twin.discovery]``'s address, token, CA and client certificate)
polled once, and :func:`pipecat_app.twin.discovery.experts_from_health`
(TwinService's reading of the service meta). The run scores prompts on the
experts of one domain that serve one model; Consul unreachable, or no such
expert, is :class:`~prompt_engineering.runner.EndpointDown`: the run stops
before anything is scored.
"""

from __future__ import annotations

from typing import Any

from pipecat_app.twin.api_tls import describe_failure
from pipecat_app.twin.config import DiscoveryConfig
from pipecat_app.twin.discovery import Expert, experts_from_health, health_watch

from prompt_engineering.runner import EndpointDown


async def discover(config: DiscoveryConfig, domain: str) -> list[Expert]:
    """The healthy experts of ``domain`` that serve the first one's model, by name.

    Raises:
        EndpointDown: Consul did not answer (the reason names the CA and
            address as TwinService logs it), or it lists no healthy expert of
            ``domain``.
    """
    found: list[Any] = []
    watch = health_watch(config, config.service, found.append, lambda exc: None)
    addr = config.resolved_consul_addr()
    try:
        await watch.poll_once()
    except Exception as exc:
        reason = describe_failure(exc, config.consul_tls(), addr)
        raise EndpointDown(f"Consul at {addr} did not list the experts: {reason}") from exc
    finally:
        await watch.stop()
    every = experts_from_health(found[0] if found and found[0] else [])
    chosen = [e for e in every if e.domain == domain]
    if not chosen:
        seen = sorted({f"{e.name} ({e.domain})" for e in every}) or ["none"]
        raise EndpointDown(
            f"Consul at {addr} lists no healthy {config.service!r} expert of domain "
            f"{domain!r} (healthy: {', '.join(seen)}); start one or pass --expert-domain"
        )
    return [e for e in chosen if e.model == chosen[0].model]
