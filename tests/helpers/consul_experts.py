"""Consul listing the experts, with each expert moved onto an endpoint of this machine.

No Consul runs here. The app's hand-written answer to
``GET /v1/health/service/llm-expert?passing=true``
(``apps/pipecat_app/tests/api_fixtures/consul_health_llm-expert_100.json``,
generated from the expert job's service block by ``helpers.job_fixtures``)
lists a ``general`` expert (``smollm2-135m``) and a ``code`` expert on LAN
addresses. :func:`serving_experts` serves that answer from
:class:`~helpers.fixture_api.FixtureAPI` with the address and port of each
domain named moved to a local URL (a llama-server, a loopback
OpenAI-compatible server, or a port nothing listens on); everything else in
it (meta, checks, indexes) stays as written.

Usage::

    with serving_experts({"general": llama.base_url}, tmp_path) as consul:
        run(["prompt-evolve", "--consul-service", "llm-expert", "--consul-addr", consul.url])
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from helpers.fixture_api import FixtureAPI

REPO = Path(__file__).resolve().parents[2]
HEALTH_FIXTURE = REPO / "apps/pipecat_app/tests/api_fixtures/consul_health_llm-expert_100.json"
SERVICE = "llm-expert"


def health_answer(where: Mapping[str, str]) -> dict[str, Any]:
    """The fixture's answer with the expert of each domain in ``where`` at that URL.

    Raises:
        KeyError: A domain the fixture has no expert of.
    """
    moved = json.loads(HEALTH_FIXTURE.read_text(encoding="utf-8"))
    domains = {entry["Service"]["Meta"]["domain"] for entry in moved["body"]}
    missing = sorted(set(where) - domains)
    if missing:
        raise KeyError(f"{HEALTH_FIXTURE.name} has no expert of {missing} (it has {domains})")
    for entry in moved["body"]:
        url = where.get(entry["Service"]["Meta"]["domain"])
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.path.rstrip("/") != "/v1" or parts.hostname is None or parts.port is None:
            raise ValueError(f"{url}: give http://<host>:<port>/v1, the path the meta implies")
        entry["Service"]["Address"] = parts.hostname
        entry["Service"]["Port"] = parts.port
        for tagged in entry["Service"]["TaggedAddresses"].values():
            tagged.update({"Address": parts.hostname, "Port": parts.port})
    return moved


@contextmanager
def serving_experts(where: Mapping[str, str], workdir: Path) -> Iterator[FixtureAPI]:
    """Consul's health API for ``llm-expert`` on 127.0.0.1, the experts moved as in ``where``."""
    answer = health_answer(where)
    root = workdir / "consul-fixtures"
    (root / "consul").mkdir(parents=True, exist_ok=True)
    route = {
        "request": {"method": "GET", "path": f"/v1/health/service/{SERVICE}"},
        "responses": [
            {"status": answer["status"], "headers": answer["headers"], "json": answer["body"]}
        ],
    }
    (root / "consul" / "health_llm_expert.yaml").write_text(yaml.safe_dump(route))
    with FixtureAPI("consul", ["health_llm_expert"], root=root) as api:
        yield api
