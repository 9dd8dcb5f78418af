"""Loading a service's config: one TOML file, environment overrides, one typed model.

:func:`load_toml_config` reads the file (or none: every key has a default),
applies the environment's overrides, makes relative paths relative to the
file's directory and validates the result. Every error is a
:class:`ConfigError` that names the key and where it came from (the file, or
the environment variable that set it).

Overrides: ``<PREFIX><SECTION>__<KEY>=value`` sets ``<section>.<key>``
(double underscores separate levels, names are case-insensitive). The value
is read as a TOML value when it parses as one (``9000``, ``true``,
``"text"``, ``["a", "b"]``) and as a plain string otherwise. A secret's
override (``verbatim`` keys) is taken as written, or as the TOML string it
quotes, never as a number: ``...__ACCESS_TOKEN=0123`` is the token "0123".

Paths: each key named in ``paths``, from the file or from an override, is
made relative to the directory of the config file (the working directory
without one), with ``~`` expanded. Those also in ``empty_is_none`` mean
"none" when empty.

:class:`ServerSection` is the ``[server]`` table both services share: where
they listen, HTTPS (``tls_cert_file`` and ``tls_key_file``, both or
neither), the access token and who may read ``/metrics``.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

#: Who may read /metrics (``server.metrics_access``).
MetricsAccess = Literal["local", "open", "token"]

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and its source."""


class ConfigSection(BaseModel):
    """A table of the config file: an unknown key in it is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ServerSection(ConfigSection):
    """Where an HTTP service listens, whether over HTTPS, and who may use it.

    A service subclasses it for its own default port and its limits.
    """

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 for every interface.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) to serve HTTPS with; set it and tls_key_file, "
        "or neither (plain HTTP).",
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of tls_cert_file (readable by the service only)."
    )
    access_token: SecretStr = Field(
        SecretStr(""),
        description="Token every client must show (Authorization: Bearer) except on "
        "/health; empty = anyone who can reach host:port may use the service.",
    )
    metrics_access: MetricsAccess = Field(
        "local",
        description="Who may read /metrics: 'local' = clients on this machine's loopback "
        "only (others get 403), 'open' = anyone, 'token' = clients with access_token "
        "(Prometheus: authorization { credentials = ... }).",
    )

    @property
    def tls(self) -> bool:
        """Whether the service speaks HTTPS."""
        return self.tls_cert_file is not None

    @model_validator(mode="after")
    def _check_tls_pair(self) -> ServerSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("tls_cert_file", "tls_key_file")
                if self.tls_key_file is None
                else ("tls_key_file", "tls_cert_file")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: set both for HTTPS, or neither for "
                "plain HTTP"
            )
        return self


def check_tls_files(server: ServerSection, where: str | Path) -> None:
    """The certificate and key can be read and belong together (else uvicorn fails later)."""
    if server.tls_cert_file is None or server.tls_key_file is None:
        return
    for key, file in (
        ("tls_cert_file", server.tls_cert_file),
        ("tls_key_file", server.tls_key_file),
    ):
        try:
            file.open("rb").close()
        except OSError as exc:
            raise ConfigError(
                f"invalid configuration in {where}:\n  server.{key}: {file} cannot be read "
                f"({exc.strerror}): point it at a PEM file this user may read"
            ) from exc
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            server.tls_cert_file, server.tls_key_file
        )
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"invalid configuration in {where}:\n  server.tls_cert_file, server.tls_key_file: "
            f"{server.tls_cert_file} and {server.tls_key_file} are not a PEM certificate "
            f"and its key ({exc})"
        ) from exc


def _parse_env_value(raw: str) -> Any:
    """Read an override as a TOML value when it is one, as a string otherwise."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(
    environ: Mapping[str, str], prefix: str, verbatim: Collection[tuple[str, ...]] = ()
) -> dict[tuple[str, ...], tuple[str, Any]]:
    """Map key paths to (variable name, value) for every ``prefix`` variable."""
    overrides: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, raw in environ.items():
        if not name.upper().startswith(prefix) or name.upper() == prefix:
            continue
        path = tuple(part.lower() for part in name[len(prefix) :].split("__"))
        if any(not part for part in path):
            raise ConfigError(f"environment variable {name}: empty key part (use single __)")
        value = _parse_env_value(raw)
        if path in verbatim and not isinstance(value, str):
            value = raw
        overrides[path] = (name, value)
    return overrides


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any, source: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(path)} goes below a key that is not a table")
        node = child
    node[path[-1]] = value


def _resolve_paths(
    data: dict[str, Any], base: Path, paths: Iterable[str], empty_is_none: Collection[str]
) -> None:
    """Make the relative paths relative to ``base`` (the config file's directory)."""
    for dotted in paths:
        *tables, key = dotted.split(".")
        node: Any = data
        for table in tables:
            node = node.get(table) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(key), str):
            continue
        if node[key]:
            node[key] = str(base / Path(node[key]).expanduser())
        elif dotted in empty_is_none:
            node[key] = None


def describe_error(error: Mapping[str, Any], hidden: Collection[str] = ()) -> str:
    """One readable line per pydantic error: the dotted key, then the problem.

    ``hidden``: parts of an error's location that are no key of the file
    (the tags of a discriminated union).
    """
    parts = [str(p) for p in error["loc"] if p not in hidden]
    key = ".".join(parts) or "(top level)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling and section)"
    elif error["type"] == "missing":
        message = "required key is missing"
    return f"{key}: {message}"


def load_toml_config(
    model: type[Model],
    path: Path | None,
    *,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
    verbatim: Collection[tuple[str, ...]] = (),
    paths: Iterable[str] = (),
    empty_is_none: Collection[str] = (),
    hidden_locations: Collection[str] = (),
    on_empty: Callable[[Path], None] | None = None,
) -> Model:
    """Load ``path`` (None: defaults only), apply the environment's overrides, validate.

    ``on_empty`` is called with the path of a config file that sets nothing.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        if not data and on_empty is not None:
            on_empty(path)
    overrides = env_overrides(environ, env_prefix, verbatim)
    for key_path, (name, value) in overrides.items():
        _apply(data, key_path, value, f"environment variable {name}")
    base = path.resolve().parent if path is not None else Path.cwd()
    _resolve_paths(data, base, paths, empty_is_none)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        by_env = {".".join(p): name for p, (name, _) in overrides.items()}
        lines = []
        for error in exc.errors():
            line = describe_error(error, hidden_locations)
            key = line.split(":", 1)[0]
            source = next((n for k, n in by_env.items() if key.startswith(k)), None)
            lines.append(f"  {line}" + (f" (set by {source})" if source else ""))
        where = path if path is not None else "the defaults"
        raise ConfigError(f"invalid configuration in {where}:\n" + "\n".join(lines)) from exc
