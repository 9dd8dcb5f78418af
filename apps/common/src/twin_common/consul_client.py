"""A py-consul client for one Consul address, with exactly the token it is given.

py-consul 1.8 prefers the environment over its arguments: ``Consul(token=...)``
ends with ``self.token = os.getenv("CONSUL_HTTP_TOKEN", token)``, so a token a
user configured loses to whatever the process environment holds (a Nomad task
or an operator's shell often exports one). The services read their own token
setting and fall back to ``CONSUL_HTTP_TOKEN`` themselves; this client then
uses the token that came out of that, and the environment only when none did.
"""

from __future__ import annotations

import urllib.parse

import consul

_DEFAULT_PORTS = {"http": 8500, "https": 443}


def consul_client(
    addr: str,
    token: str = "",
    verify: bool | str = True,
    cert: tuple[str, str] | None = None,
) -> consul.Consul:
    """A client for ``addr`` (``http(s)://host[:port]``) that sends ``token``.

    An empty ``token`` leaves py-consul's own choice (``CONSUL_HTTP_TOKEN``,
    else none). A port left out is the scheme's (8500 for http, 443 for
    https), as in any URL.
    """
    url = urllib.parse.urlsplit(addr)
    scheme = url.scheme or "http"
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"Consul address {addr!r}: the scheme must be http or https")
    client = consul.Consul(
        host=url.hostname or "127.0.0.1",
        port=url.port or _DEFAULT_PORTS[scheme],
        scheme=scheme,
        token=token or None,
        verify=verify,
        cert=cert,
    )
    if token:
        client.token = token
    return client
