"""How the app trusts Consul's and Nomad's HTTPS, and proves itself with a client certificate.

An :class:`ApiTLS` says which CA file verifies one API's certificate (none:
the system's CAs) and, for mTLS, which client certificate and key the app
shows. :class:`~pipecat_app.twin.config.DiscoveryConfig` makes one per API
from ``[twin.discovery]`` and HashiCorp's environment variables
(``CONSUL_CACERT``, ``NOMAD_CACERT``...). It gives the same trust to both
kinds of client the app uses: an :class:`ssl.SSLContext` for httpx (the
blocking-query watches) and ``verify``/``cert`` for the requests-based
py-consul and python-nomad (``cluster_status``).

:meth:`ApiTLS.check` reads the files once at start, so a missing or wrong
file stops the app with the name of the setting, not the first turn.
:func:`describe_failure` turns a refused handshake into a sentence that says
which CA was trusted and what to set.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

# Where OpenSSL finds the system's CAs (Debian: /etc/ssl/certs). requests
# would otherwise use certifi's public CAs, so py-consul and python-nomad
# trust the same CAs as the httpx watches.
_SYSTEM_CAS = ssl.get_default_verify_paths()


@dataclass(frozen=True)
class ApiTLS:
    """The TLS files for one API (Consul or Nomad); empty strings mean none.

    Attributes:
        api: ``"Consul"`` or ``"Nomad"``, for messages.
        ca_file: PEM file of the CA that signs the API's certificate; empty:
            the system's CAs.
        ca_setting: Where ``ca_file`` came from (``twin.discovery.ca_file`` or
            the environment variable), named in every message about it.
        client_cert_file: PEM client certificate for mTLS (with ``client_key_file``).
        client_key_file: Its private key.
        cert_setting: Where the client certificate and key came from.
    """

    api: str
    ca_file: str = ""
    ca_setting: str = "twin.discovery.ca_file"
    client_cert_file: str = ""
    client_key_file: str = ""
    cert_setting: str = "twin.discovery.client_cert_file, client_key_file"

    @property
    def trusted(self) -> str:
        """Which CAs verify the API's certificate, in words."""
        if self.ca_file:
            return f"the CA in {self.ca_setting} ({self.ca_file})"
        return "the system's CAs"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting ``ca_file`` (or the system's CAs), with the client
        certificate loaded; raises ``ValueError`` naming the setting that is wrong."""
        # ssl.SSLError is an OSError: it is caught first.
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except ssl.SSLError as exc:
            raise ValueError(
                f"{self.ca_setting}: {self.ca_file} holds no PEM certificate "
                f"({exc.reason or exc}): point it at the PEM file of the CA that signed "
                f"{self.api}'s certificate"
            ) from exc
        except OSError as exc:
            raise ValueError(
                f"{self.ca_setting}: {self.ca_file} cannot be read ({exc.strerror}): point it "
                f"at the PEM file of the CA that signed {self.api}'s certificate"
            ) from exc
        if self.client_cert_file or self.client_key_file:
            if not (self.client_cert_file and self.client_key_file):
                raise ValueError(
                    f"{self.cert_setting}: set both the client certificate and its key, or neither"
                )
            try:
                context.load_cert_chain(self.client_cert_file, self.client_key_file)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"{self.cert_setting}: {self.client_cert_file} and {self.client_key_file} "
                    f"are not a PEM certificate and its key ({exc.reason or exc})"
                ) from exc
            except OSError as exc:
                raise ValueError(
                    f"{self.cert_setting}: {exc.filename or self.client_cert_file} cannot be "
                    f"read ({exc.strerror})"
                ) from exc
        return context

    def check(self) -> None:
        """Read the files now (raises ``ValueError`` naming the setting)."""
        self.ssl_context()

    @property
    def requests_verify(self) -> str | bool:
        """``verify`` for requests (py-consul, python-nomad): the CA file, else the system's."""
        if self.ca_file:
            return self.ca_file
        for system in (_SYSTEM_CAS.cafile, _SYSTEM_CAS.capath):
            if system and Path(system).exists():
                return system
        return True

    @property
    def requests_cert(self) -> tuple[str, str] | None:
        """``cert`` for requests: the client certificate and key, or None."""
        if self.client_cert_file and self.client_key_file:
            return (self.client_cert_file, self.client_key_file)
        return None


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: ``__cause__``, ``__context__``, and the exceptions that
    urllib3 and requests keep in ``reason`` and ``args`` instead."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 16:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        wrapped.extend(current.args)
        todo.extend(w for w in wrapped if isinstance(w, BaseException))
    return seen


def describe_failure(exc: BaseException, tls: ApiTLS, addr: str) -> str:
    """Why a request to ``addr`` failed, in one line; a refused TLS handshake says which CA
    was trusted and what to set."""
    causes = _causes(exc)
    untrusted = next((c for c in causes if isinstance(c, ssl.SSLCertVerificationError)), None)
    if untrusted is not None:
        reason = untrusted.verify_message or untrusted.reason or str(untrusted)
        return (
            f"TLS certificate of {tls.api} at {addr} not trusted ({reason}) by {tls.trusted}; "
            f"set {tls.ca_setting} to the CA that signed it"
        )
    handshake = next((c for c in causes if isinstance(c, ssl.SSLError)), None)
    if handshake is not None:
        # A server that demands a client certificate may close without a
        # readable alert (EOF, or a read that never completes), so the hint
        # names both causes.
        shown = "the client certificate was refused" if tls.requests_cert else "none was shown"
        return (
            f"TLS handshake with {tls.api} at {addr} failed ({handshake.reason or handshake}); "
            f"check that {addr} is {tls.api}'s HTTPS address, and whether it demands a "
            f"client certificate ({shown}: {tls.cert_setting})"
        )
    return f"{type(exc).__name__}: {exc}"
