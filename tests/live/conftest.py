"""Clients of a real Consul + Nomad cluster, from the standard environment variables.

Every test here is marked ``live`` (``make test-live`` runs ``pytest -m live``)
and is skipped, naming the missing variable, when the cluster is not given:

- CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN (and CONSUL_CACERT for https)
- NOMAD_ADDR, NOMAD_TOKEN (and NOMAD_CACERT for https)
- TWIN_NOMAD_NAMESPACES: comma-separated namespaces the inventory configures
"""

from __future__ import annotations

import os
from unittest import mock

import consul
import nomad
import pytest


def require_env(*names: str) -> dict[str, str]:
    """Return the variables, or skip the test naming the first one missing."""
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.skip(f"{missing[0]} is not set: point it at a real cluster to run the live checks")
    return {name: os.environ[name] for name in names}


def consul_client(token: str | None) -> consul.Consul:
    """A py-consul client for CONSUL_HTTP_ADDR with ``token`` (None: anonymous).

    py-consul prefers CONSUL_HTTP_TOKEN over its argument, so the variable is
    hidden while the client is made.
    """
    verify: bool | str = os.environ.get("CONSUL_CACERT") or True
    with mock.patch.dict(os.environ, clear=False) as env:
        env.pop("CONSUL_HTTP_TOKEN", None)
        client = consul.Consul(token=token, verify=verify)
    if token:
        # Some endpoints (agent members, status) take no token argument in
        # py-consul; with default-deny ACLs they need it all the same.
        client.http.session.headers["X-Consul-Token"] = token
    return client


def nomad_client(token: str | None) -> nomad.Nomad:
    """A python-nomad client for NOMAD_ADDR with ``token`` (None: anonymous).

    python-nomad falls back to NOMAD_TOKEN when given no token, so the variable
    is hidden while the client is made.
    """
    verify: bool | str = os.environ.get("NOMAD_CACERT") or False
    with mock.patch.dict(os.environ, clear=False) as env:
        env.pop("NOMAD_TOKEN", None)
        return nomad.Nomad(address=os.environ["NOMAD_ADDR"], token=token, verify=verify, timeout=10)


@pytest.fixture
def consul_api() -> consul.Consul:
    env = require_env("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN")
    return consul_client(env["CONSUL_HTTP_TOKEN"])


@pytest.fixture
def consul_anonymous() -> consul.Consul:
    require_env("CONSUL_HTTP_ADDR")
    return consul_client(None)


@pytest.fixture
def nomad_api() -> nomad.Nomad:
    env = require_env("NOMAD_ADDR", "NOMAD_TOKEN")
    return nomad_client(env["NOMAD_TOKEN"])


@pytest.fixture
def nomad_anonymous() -> nomad.Nomad:
    require_env("NOMAD_ADDR")
    return nomad_client(None)


@pytest.fixture
def expected_namespaces() -> list[str]:
    env = require_env("TWIN_NOMAD_NAMESPACES")
    return [name.strip() for name in env["TWIN_NOMAD_NAMESPACES"].split(",") if name.strip()]
