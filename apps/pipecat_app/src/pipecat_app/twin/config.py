"""TwinService configuration: the ``[twin]`` table of the app's config file.

One typed model, validated once at start. Every field is documented here; the
app's ``AppConfig`` embeds :class:`TwinConfig` as its ``twin`` field, and every
table of the app's config, the app's own and these, is a :class:`ConfigSection`.

Paths: the app's ``load_config`` makes a relative ``memory.path`` or
``prompt.file`` (from the file or an environment override) relative to the
config file's directory and expands ``~``. A model built here directly, as
the tests do, takes paths as given: a relative one is opened from the working
directory.

TOML shape::

    [twin]
    user_id = "default"

    [twin.memory]
    path = "/var/lib/twin/memory.sqlite3"
    token_budget = 512
    max_item_chars = 1000

    [twin.prompt]
    file = "prompts/system.md"
    consul_key = "twin/prompts/system"

    [twin.discovery]
    mode = "static"                 # or "consul" (then [[twin.experts]] are its fallback)
    consul_addr = "http://127.0.0.1:8500"   # https://127.0.0.1:8501 with TLS on
    ca_file = ""                    # the cluster's CA; empty: CONSUL_CACERT / NOMAD_CACERT
    service = "llm-expert"

    [[twin.experts]]
    name = "general"
    domain = "general"
    description = "Everyday conversation and general knowledge"
    base_url = "http://127.0.0.1:8080/v1"

    [twin.routing]
    default_domain = "general"
    threshold = 0.35

    [[twin.routing.rules]]
    domain = "code"
    pattern = "(?i)\\b(python|code)\\b"
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from twin_common.config import ConfigSection

from pipecat_app.twin.api_tls import ApiTLS

_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)

# The system prompt TwinService ships with, one file: the default of
# ``twin.prompt.text``, the embedded config's ``twin.prompt.file`` and the
# starting prompt of prompt_engineering/. Inside the installed wheel
# (``pipecat_app/_config``), else in the source tree (editable install).
_PACKAGE = Path(__file__).resolve().parents[1]
SHIPPED_PROMPT = next(
    (
        path
        for path in (
            _PACKAGE / "_config" / "prompts" / "system.md",
            _PACKAGE.parents[1] / "config" / "prompts" / "system.md",
        )
        if path.is_file()
    ),
    _PACKAGE.parents[1] / "config" / "prompts" / "system.md",
)


def shipped_prompt() -> str:
    """The text of :data:`SHIPPED_PROMPT`."""
    return SHIPPED_PROMPT.read_text(encoding="utf-8").strip()


def _regex(key: str) -> Callable[[str], str]:
    """A validator: the value of ``key`` must compile as a regular expression."""

    def compiles(value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{key} {value!r} is not a regex: {exc}") from exc
        return value

    return compiles


def _http_url(key: str, *, allow_empty: bool = False) -> Callable[[str], str]:
    """A validator: the value of ``key`` must be an ``http://`` or ``https://`` URL with a host.

    pydantic's ``HttpUrl`` checks it, and the host must be written where the
    clients (httpx, requests) read it: pydantic reads ``http:///v1`` as host
    ``v1``, they read no host. The value is kept as written.
    """

    def is_url(value: str) -> str:
        if allow_empty and value == "":
            return value
        try:
            _HTTP_URL.validate_python(value)
            problem = "" if urllib.parse.urlsplit(value).hostname else "no host"
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
        if problem:
            raise ValueError(
                f"{key} {value!r} is not an http(s) URL ({problem}): write it as "
                "http://host:port or https://host:port"
            ) from None
        return value

    return is_url


def _api_tls(config: DiscoveryConfig, api: str, env: str) -> ApiTLS:
    """One API's TLS files from ``config``, else from env ``<ENV>_CACERT``,
    ``<ENV>_CLIENT_CERT`` and ``<ENV>_CLIENT_KEY``."""
    ca_env = os.environ.get(f"{env}_CACERT", "")
    if config.ca_file:
        ca_file, ca_setting = config.ca_file, "twin.discovery.ca_file"
    elif ca_env:
        ca_file, ca_setting = ca_env, f"env {env}_CACERT"
    else:
        ca_file, ca_setting = "", f"twin.discovery.ca_file (or env {env}_CACERT)"
    if config.client_cert_file or config.client_key_file:
        cert, key = config.client_cert_file, config.client_key_file
        cert_setting = "twin.discovery.client_cert_file and client_key_file"
    else:
        cert = os.environ.get(f"{env}_CLIENT_CERT", "")
        key = os.environ.get(f"{env}_CLIENT_KEY", "")
        cert_setting = f"env {env}_CLIENT_CERT and {env}_CLIENT_KEY"
    return ApiTLS(api, ca_file, ca_setting, cert, key, cert_setting)


class MemoryConfig(ConfigSection):
    """``[twin.memory]``: the SQLite memory store.

    Attributes:
        path: SQLite database file (WAL mode). ``load_config`` makes a relative
            path relative to the config file. In the cluster this is on a Nomad
            host volume so memory survives restarts and rescheduling.
        token_budget: Tokens of recalled memory put into the context per turn
            (estimated as characters / 4).
        recall_limit: Most items recalled per turn before the budget is applied.
        half_life_days: Recency weighting: a memory this many days old counts half
            as much as a fresh one with the same text relevance.
        max_item_chars: Longest text one memory keeps, in characters. A turn
            longer than this is stored cut to its first ``max_item_chars``;
            the ``remember`` tool advertises it as its fact's ``maxLength``
            and refuses a longer fact. The default holds a minute of speech
            or an answer of ``max_tokens``.
        enabled: False runs without memory (no file is opened).
        semantic: Recall by meaning too: each memory's sentence embedding
            (all-MiniLM-L6-v2, written by a background thread) in a sqlite-vec
            table, and each turn embedded once; the nearest memories are fused
            with the BM25 matches by reciprocal rank. False: BM25 alone, and
            no model is loaded (about 230 MB less memory).
        embedding_threads: CPU threads of the embedding model (onnxruntime).
        semantic_candidates: Memories compared by exact cosine similarity per
            turn: the nearest by hamming distance of their binary-quantised
            vectors. More finds more at 100,000 memories, at some cost per turn.
        semantic_window: Episodes (turns) recalled by meaning are those among
            about the newest ``semantic_window`` memories; facts are searched
            all. Each 20,000 more cost a few milliseconds per turn.
        min_similarity: Cosine similarity (-1 to 1) a memory needs to be
            recalled by meaning; below it only BM25 can recall it.
    """

    path: Path = Path("/var/lib/twin/memory.sqlite3")
    token_budget: int = Field(default=512, ge=0)
    recall_limit: int = Field(default=8, ge=1, le=100)
    half_life_days: float = Field(default=30.0, gt=0)
    max_item_chars: int = Field(default=1000, ge=1)
    enabled: bool = True
    semantic: bool = True
    embedding_threads: int = Field(default=1, ge=1, le=16)
    semantic_candidates: int = Field(default=100, ge=1, le=1000)
    semantic_window: int = Field(default=20_000, ge=1000)
    min_similarity: float = Field(default=0.3, ge=-1.0, le=1.0)


class PromptConfig(ConfigSection):
    """``[twin.prompt]``: where the system prompt comes from.

    Attributes:
        file: Local default system prompt (used until, or unless, Consul KV has one).
            ``load_config`` makes a relative path relative to the config file.
        text: Inline default used when ``file`` is empty or missing; by
            default the prompt TwinService ships with (:data:`SHIPPED_PROMPT`).
        consul_key: Consul KV key that ``prompt_engineering/`` publishes evolved
            prompts to; watched with blocking queries and applied without a
            restart. Empty: no Consul watch.
    """

    file: str = ""
    text: str = Field(default_factory=shipped_prompt)
    consul_key: str = ""


class DiscoveryConfig(ConfigSection):
    """``[twin.discovery]``: where the experts come from.

    Attributes:
        mode: ``static`` uses ``[[twin.experts]]`` (no Consul needed); ``consul``
            follows the healthy instances of ``service`` with blocking queries,
            and while Consul has reported none (unreachable since start, or no
            healthy instance) the configured ``[[twin.experts]]`` serve as a
            fallback, never merged with Consul's set.
        consul_addr: Consul HTTP(S) address, an ``http://`` or ``https://`` URL
            (also used for the prompt watch and ``cluster_status``). Env
            ``CONSUL_HTTP_ADDR`` overrides when this is left at its default; as
            in HashiCorp's tools it may be ``host:port``, which is ``https``
            when env ``CONSUL_HTTP_SSL`` is true and ``http`` otherwise.
        consul_token: Consul ACL token; empty falls back to env ``CONSUL_HTTP_TOKEN``.
        ca_file: PEM file of the CA that signs Consul's and Nomad's HTTPS
            certificates (the collection's CA), and those of the vision service
            and the experts when they speak HTTPS (:meth:`service_tls`). Empty:
            env ``CONSUL_CACERT`` for Consul and ``NOMAD_CACERT`` for Nomad,
            else (and for the services) the system's CAs. Read at start: a
            file that cannot be read or holds no certificate is a config
            error. Give an absolute path (a relative one is opened from the
            working directory).
        client_cert_file: PEM client certificate shown to Consul and Nomad
            when they require one (mTLS: Consul's ``verify_incoming``, Nomad's
            ``verify_https_client``); with ``client_key_file``. Empty: env
            ``CONSUL_CLIENT_CERT``/``CONSUL_CLIENT_KEY`` for Consul and
            ``NOMAD_CLIENT_CERT``/``NOMAD_CLIENT_KEY`` for Nomad, else none.
        client_key_file: Private key of ``client_cert_file``.
        service: Consul service name the expert jobs register.
        wait: Blocking query wait (Consul duration string, e.g. ``"55s"``).
        retry_s: Seconds between retries while Consul is unreachable.
        vision_service: Consul service name of the vision service for ``describe_scene``.
        nomad_addr: Nomad HTTP(S) address for ``cluster_status``, an ``http://``
            or ``https://`` URL; empty: env ``NOMAD_ADDR`` or ``http://127.0.0.1:4646``.
        nomad_token: Nomad ACL token; empty falls back to env ``NOMAD_TOKEN``.
    """

    # The tokens stay out of validation errors (their input is not echoed).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    mode: Literal["static", "consul"] = "static"
    consul_addr: str = "http://127.0.0.1:8500"
    consul_token: str = Field(default="", repr=False)
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    service: str = "llm-expert"
    wait: str = "55s"
    retry_s: float = Field(default=2.0, gt=0)
    vision_service: str = "vision"
    nomad_addr: str = ""
    nomad_token: str = Field(default="", repr=False)

    _consul_addr_is_url = field_validator("consul_addr")(_http_url("twin.discovery.consul_addr"))
    _nomad_addr_is_url = field_validator("nomad_addr")(
        _http_url("twin.discovery.nomad_addr", allow_empty=True)
    )

    @model_validator(mode="after")
    def _tls_files_usable(self) -> DiscoveryConfig:
        """A CA or client certificate that cannot be used stops the app at start."""
        self.consul_tls().check()
        self.nomad_tls().check()
        return self

    def resolved_consul_addr(self) -> str:
        """Consul address with env ``CONSUL_HTTP_ADDR`` applied when left at default.

        An address without a scheme (``CONSUL_HTTP_ADDR=127.0.0.1:8501``) is
        ``https`` when env ``CONSUL_HTTP_SSL`` is true, else ``http``, as
        HashiCorp's tools read it.
        """
        env = os.environ.get("CONSUL_HTTP_ADDR", "")
        addr = self.consul_addr
        if env and addr == "http://127.0.0.1:8500":
            addr = env
        if "://" in addr:
            return addr
        ssl_on = os.environ.get("CONSUL_HTTP_SSL", "").strip().lower() in {"1", "true"}
        return f"{'https' if ssl_on else 'http'}://{addr}"

    def consul_tls(self) -> ApiTLS:
        """Consul's CA and client certificate: config, else ``CONSUL_CACERT``,
        ``CONSUL_CLIENT_CERT`` and ``CONSUL_CLIENT_KEY``."""
        return _api_tls(self, "Consul", "CONSUL")

    def nomad_tls(self) -> ApiTLS:
        """Nomad's CA and client certificate: config, else ``NOMAD_CACERT``,
        ``NOMAD_CLIENT_CERT`` and ``NOMAD_CLIENT_KEY``."""
        return _api_tls(self, "Nomad", "NOMAD")

    def service_tls(self, service: str) -> ApiTLS:
        """The trust for one of the cluster's own services over HTTPS (``service``: "the
        vision service", "expert <name>"): ``ca_file``, the collection's CA, which signs
        their certificates too; empty: the system's CAs. They ask for no client certificate."""
        return ApiTLS(service, self.ca_file)

    def resolved_consul_token(self) -> str:
        """ACL token from config, else env ``CONSUL_HTTP_TOKEN``."""
        return self.consul_token or os.environ.get("CONSUL_HTTP_TOKEN", "")

    def resolved_nomad_addr(self) -> str:
        """Nomad address from config, else env ``NOMAD_ADDR``, else the local agent."""
        return self.nomad_addr or os.environ.get("NOMAD_ADDR", "http://127.0.0.1:4646")

    def resolved_nomad_token(self) -> str:
        """ACL token from config, else env ``NOMAD_TOKEN``."""
        return self.nomad_token or os.environ.get("NOMAD_TOKEN", "")


class ExpertConfig(ConfigSection):
    """``[[twin.experts]]``: one static expert (an OpenAI-compatible endpoint).

    Attributes:
        name: Unique name (metrics label, logs).
        domain: Routing domain (``general``, ``code``...).
        description: What the expert is good at (logs, and the router's last
            resort when neither the expert nor the app has example utterances).
        examples: Example utterances of the expert's domain (at most 16, each
            at most 512 characters); the router compares turns to them. Empty:
            the app's own examples for a well-known domain (general, code,
            home, vision).
        base_url: OpenAI-compatible base URL, ending in ``/v1``.
        model: Model name sent in requests.
        context_length: Context window in tokens; older turns are dropped to fit.
        tool_calls: True for servers that accept native ``tools`` (llama-server
            ``--jinja``); False uses the JSON-schema constrained fallback
            (``response_format``), which prima.cpp's server honours.
        api_key: Bearer key, if the endpoint needs one.
    """

    name: str
    domain: str = "general"
    description: str = ""
    examples: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        default_factory=list, max_length=16
    )
    base_url: str
    model: str = "default"
    context_length: int = Field(default=2048, ge=256)
    tool_calls: bool = False
    api_key: str = Field(default="none", repr=False)

    _base_url_is_url = field_validator("base_url")(_http_url("twin.experts.base_url"))


class RoutingRule(ConfigSection):
    """``[[twin.routing.rules]]``: a regular expression that sends a turn to a domain.

    Attributes:
        domain: Domain chosen when ``pattern`` matches the user's turn.
        pattern: Python regular expression (``re.search``).
    """

    domain: str
    pattern: str

    _compiles = field_validator("pattern")(_regex("twin.routing.rules.pattern"))


class RoutingConfig(ConfigSection):
    """``[twin.routing]``: the mixture-of-experts router.

    Attributes:
        default_domain: Domain of the general expert: turns with no evidence
            (below ``threshold``) and ties go there.
        threshold: Lowest score (0..1: the router's probability, from the
            domains' example utterances, that the turn belongs to a domain)
            that routes to that domain; below it the default domain wins.
        margin: Two domains whose scores differ by no more than this are a
            tie, settled by the default domain.
        sticky_turns: Follow-ups in a row ("why?", "and the second one?": a
            turn with nothing else to go on) that stay with the previous
            turn's expert; 0 disables stickiness.
        expert_timeout_s: Seconds to wait for an expert's first token (and between
            tokens) before failing over to the next healthy expert.
        max_answer_tokens: Cap on the tokens of one expert answer (the request's
            ``max_tokens``); an answer cut there ends with an ellipsis.
        rules: Regex rules checked before similarity.
    """

    default_domain: str = "general"
    threshold: float = Field(default=0.35, ge=0.0, le=1.0)
    margin: float = Field(default=0.0, ge=0.0, le=1.0)
    sticky_turns: int = Field(default=3, ge=0)
    expert_timeout_s: float = Field(default=20.0, gt=0)
    max_answer_tokens: int = Field(default=256, ge=16, le=8192)
    rules: list[RoutingRule] = Field(default_factory=list)


class ToolsConfig(ConfigSection):
    """``[twin.tools]``: the built-in tools.

    Attributes:
        enabled: False advertises no tools.
        max_rounds: Most tool rounds in one turn before the model must answer.
        vision_url: Base URL of the vision service for ``describe_scene``, an
            ``http://`` or ``https://`` URL; empty: discovered in Consul (service
            ``discovery.vision_service``, over the scheme its meta ``scheme``
            names) when discovery mode is ``consul``. Its HTTPS certificate is
            verified against ``twin.discovery.ca_file``.
        vision_token: The vision service's access token (its
            ``server.access_token``), sent as ``Authorization: Bearer``; empty:
            none. Never logged nor shown in errors.
        timeout_s: Seconds a tool may take before it returns a timeout error.
        trigger: Regular expression; experts without native tool calls (the
            JSON-schema fallback) are offered tools only on turns it matches,
            other turns stream a plain answer, much faster. Empty: every turn.
        visual_trigger: Regular expression; a turn it matches is visual: while
            a vision service is there, the scene is fetched before the expert
            answers and the request carries it as a marked observation (the
            model is not asked to choose ``describe_scene``). Empty: never.
        destructive_trigger: Regular expression the user's own words in a turn
            must match for a destructive tool (``forget``) to run; a call the
            user did not ask for (a sign read by the camera, a model's whim)
            is refused in the tool layer.
    """

    # The token stays out of validation errors (its input is not echoed).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    enabled: bool = True
    max_rounds: int = Field(default=2, ge=1, le=8)
    vision_url: str = ""
    vision_token: SecretStr = Field(default=SecretStr(""))
    timeout_s: float = Field(default=10.0, gt=0)
    trigger: str = (
        r"(?i)\b(remember|recall|forget|memory|memories|time|date|clock|camera|scene"
        r"|see|look|cluster|experts?|jobs?|nodes?|status)\b"
    )
    visual_trigger: str = (
        r"(?i)\b(see|sees|seeing|look|looks|looking|camera|scene|showing|holding"
        r"|wearing|in front of|door|sign|anyone|anybody|someone|somebody)\b"
    )
    destructive_trigger: str = r"(?i)\b(forget|delete|erase|remove|wipe)\b"

    _vision_url_is_url = field_validator("vision_url")(
        _http_url("twin.tools.vision_url", allow_empty=True)
    )
    _trigger_compiles = field_validator("trigger")(_regex("twin.tools.trigger"))
    _visual_compiles = field_validator("visual_trigger")(_regex("twin.tools.visual_trigger"))
    _destructive_compiles = field_validator("destructive_trigger")(
        _regex("twin.tools.destructive_trigger")
    )

    @field_validator("vision_token")
    @classmethod
    def _token_fits_a_header(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if token and not all(33 <= ord(c) <= 126 for c in token):
            raise ValueError(
                "twin.tools.vision_token holds white space or characters an HTTP header cannot "
                "carry: set it to the vision service's access token alone (no newline)"
            )
        return value


def _default_experts(data: dict[str, Any]) -> list[ExpertConfig]:
    """The embedded default: one general expert on a local llama-server; none in consul mode.

    In ``consul`` mode the configured experts are the fallback while Consul
    has none, and only experts the config names are one.
    """
    discovery = data.get("discovery")
    if isinstance(discovery, DiscoveryConfig) and discovery.mode == "consul":
        return []
    return [
        ExpertConfig(
            name="general",
            domain="general",
            description="Everyday conversation and general knowledge",
            base_url="http://127.0.0.1:8080/v1",
            model="smollm2-135m",
        )
    ]


class TwinConfig(ConfigSection):
    """``[twin]``: TwinService (memory, tools, routing, discovery, prompt).

    Attributes:
        user_id: Whose memory this conversation reads and writes.
        memory: See :class:`MemoryConfig`.
        prompt: See :class:`PromptConfig`.
        discovery: See :class:`DiscoveryConfig`.
        experts: The configured experts: all there is in ``static`` mode; in
            ``consul`` mode the fallback that serves while Consul has reported
            no healthy expert, never merged with Consul's set. Default: one
            general expert on a local llama-server at
            ``http://127.0.0.1:8080/v1`` in ``static`` mode, none in ``consul``
            mode.
        routing: See :class:`RoutingConfig`.
        tools: See :class:`ToolsConfig`.
    """

    user_id: str = "default"
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    experts: list[ExpertConfig] = Field(default_factory=_default_experts)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)

    @model_validator(mode="after")
    def _static_needs_experts(self) -> TwinConfig:
        if self.discovery.mode == "static" and not self.experts:
            raise ValueError(
                "twin.discovery.mode is 'static' but no [[twin.experts]] are configured: "
                "add at least one expert or set mode = 'consul'"
            )
        names = [e.name for e in self.experts]
        if len(names) != len(set(names)):
            raise ValueError(f"twin.experts names must be unique, got {names}")
        return self
