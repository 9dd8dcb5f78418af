"""A routing rule or default naming a domain no expert has: logged once at start-up, in /health."""

from __future__ import annotations

from pathlib import Path

import pytest
from loguru import logger

from pipecat_app.twin import ClusterView, TwinConfig


@pytest.mark.anyio
async def test_rule_for_a_domain_no_expert_has_is_reported_once_and_in_health(tmp_path: Path):
    config = TwinConfig.model_validate(
        {
            "memory": {"path": str(tmp_path / "memory.sqlite3")},
            "experts": [
                {"name": "g", "domain": "general", "base_url": "http://127.0.0.1:9/v1"},
                {"name": "c", "domain": "coding", "base_url": "http://127.0.0.1:9/v1"},
            ],
            "routing": {"rules": [{"domain": "code", "pattern": "segfault"}]},
        }
    )
    logged: list[str] = []
    sink = logger.add(lambda m: logged.append(m.record["message"]), level="WARNING")
    cluster = ClusterView(config)
    try:
        await cluster.start()
        state, reasons = cluster.health()
        assert state == "degraded"
        assert reasons == [
            "routing rule 'segfault' names domain 'code', which no expert has "
            "(experts' domains: coding, general); the rule is not followed"
        ]
        cluster._experts_changed(cluster.experts.experts)  # a change, same problem: not again
        assert [m for m in logged if m.startswith("routing:")] == [f"routing: {reasons[0]}"]
    finally:
        logger.remove(sink)
        await cluster.stop()
