# Copyright: twin.cluster developers
# Apache License 2.0 (see galaxy.yml)
"""A small client for the Nomad HTTP API, on top of Ansible's ``open_url``.

Modules of this collection share it, so every one of them speaks to Nomad the
same way: the ``X-Nomad-Token`` header, the ``namespace``/``region`` query
parameters, JSON in and out, and errors that say what failed and how to fix it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.urls import open_url


class NomadAPIError(Exception):
    """A request to Nomad failed; ``status`` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, status: int = 0, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class NomadAPI:
    """Calls one Nomad agent's HTTP API."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        region: str | None = None,
        timeout: int = 30,
        validate_certs: bool = True,
        ca_path: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        self.token = token
        self.region = region
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.client_cert = client_cert
        self.client_key = client_key

    @staticmethod
    def job_path(job_id: str, suffix: str = "") -> str:
        """Return ``/v1/job/<id><suffix>`` with the id escaped."""
        return "/v1/job/" + quote(job_id, safe="") + suffix

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (None when empty)."""
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        if self.region and "region" not in query:
            query["region"] = self.region
        url = self.address + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["X-Nomad-Token"] = self.token
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            response = open_url(
                url,
                data=data,
                method=method,
                headers=headers,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                ca_path=self.ca_path,
                client_cert=self.client_cert,
                client_key=self.client_key,
                follow_redirects="safe",
            )
            raw = response.read()
        except HTTPError as err:
            text = _read_error_body(err)
            raise NomadAPIError(
                f"Nomad answered {method} {path} with HTTP {err.code}: {text or err.reason}",
                status=err.code,
                body=text,
            ) from err
        except (TimeoutError, URLError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise NomadAPIError(
                f"Could not reach Nomad at {self.address} ({reason}). "
                "Check nomad_addr and that the Nomad agent is running and reachable.",
            ) from err
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as err:
            raise NomadAPIError(
                f"Nomad answered {method} {path} with a body that is not JSON: {raw[:200]!r}. "
                f"Is {self.address} really a Nomad HTTP API address?",
                status=200,
            ) from err


def _read_error_body(err: HTTPError) -> str:
    try:
        raw = err.read()
    except (OSError, AttributeError):
        return ""
    if not raw:
        return ""
    return raw.decode("utf-8", errors="replace").strip()
