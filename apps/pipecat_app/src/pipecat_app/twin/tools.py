"""Tools the model may call: typed functions advertised through pipecat's tool API.

Each :class:`Tool` is a pipecat ``FunctionSchema`` (name, description, JSON
schema of its arguments) plus an async handler. :class:`ToolBox` holds them,
advertises them as a ``ToolsSchema`` (so the LLMContext carries them, and any
pipecat LLM service could run them through the schema's ``handler``), and runs
calls: arguments are validated against the tool's JSON schema (jsonschema),
the handler runs with a timeout, and every outcome, including a bad argument
or a crash, becomes a structured result for the model::

    {"ok": true, "result": ...}
    {"ok": false, "error": {"type": "invalid_arguments" | "unknown_tool" |
                                     "timeout" | "unavailable" | "failed",
                            "message": "..."}}

A failing tool never raises into the pipeline.

Built-ins (:func:`builtin_tools`): ``remember``, ``recall``, ``forget``,
``current_time``, ``describe_scene`` (the vision service, configured or found
in Consul; it answers ``POST <url>/describe`` with ``{"question": str}`` by
``{"description": str}``) and ``cluster_status`` (experts and jobs from the
Consul and Nomad APIs through py-consul and python-nomad).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import consul
import httpx
import jsonschema
import nomad
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.services.llm_service import FunctionCallParams

from pipecat_app.metrics import TOOL_CALLS
from pipecat_app.twin.config import DiscoveryConfig, ToolsConfig
from pipecat_app.twin.discovery import experts_from_health
from pipecat_app.twin.memory import MemoryStore, format_item

ToolHandler = Callable[[dict[str, Any]], Awaitable[Any]]


class ToolError(Exception):
    """A tool's own, expected failure, reported to the model as ``kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Tool:
    """One tool: its pipecat schema and the coroutine that runs it."""

    name: str
    description: str
    properties: dict[str, Any]
    handler: ToolHandler
    required: list[str] = field(default_factory=list)

    @property
    def json_schema(self) -> dict[str, Any]:
        """JSON schema of the arguments (no properties beyond the declared ones)."""
        return {
            "type": "object",
            "properties": self.properties,
            "required": self.required,
            "additionalProperties": False,
        }


def ok(result: Any) -> dict[str, Any]:
    """A successful tool result."""
    return {"ok": True, "result": result}


def failed(kind: str, message: str) -> dict[str, Any]:
    """A structured tool error."""
    return {"ok": False, "error": {"type": kind, "message": message}}


class ToolBox:
    """The tools of one TwinService, validated and run safely.

    Args:
        tools: The tools to offer.
        timeout_s: Longest a handler may run.
    """

    def __init__(self, tools: Sequence[Tool], *, timeout_s: float = 10.0) -> None:
        self._tools = {t.name: t for t in tools}
        self._timeout_s = timeout_s
        self._validators = {t.name: jsonschema.Draft202012Validator(t.json_schema) for t in tools}

    @property
    def names(self) -> list[str]:
        """Names of the tools, in order."""
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        """A tool by name."""
        return self._tools.get(name)

    def function_schemas(self) -> list[FunctionSchema]:
        """pipecat ``FunctionSchema`` per tool, each with a pipecat-style handler."""
        return [
            FunctionSchema(
                name=t.name,
                description=t.description,
                properties=t.properties,
                required=t.required,
                handler=self._pipecat_handler,
            )
            for t in self._tools.values()
        ]

    def tools_schema(self) -> ToolsSchema:
        """The tools as a pipecat ``ToolsSchema`` for the LLMContext."""
        return ToolsSchema(standard_tools=self.function_schemas())

    async def _pipecat_handler(self, params: FunctionCallParams) -> None:
        """Run a call made by a pipecat LLM service (``FunctionSchema.handler``)."""
        result = await self.call(params.function_name, dict(params.arguments))
        await params.result_callback(result)

    async def call(self, name: str, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
        """Validate and run one call; always returns a structured result (never raises)."""
        tool = self._tools.get(name)
        if tool is None:
            TOOL_CALLS.labels(tool="unknown", outcome="unknown_tool").inc()
            return failed("unknown_tool", f"no tool named {name!r}; available: {self.names}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError as exc:
                TOOL_CALLS.labels(tool=name, outcome="invalid_arguments").inc()
                return failed("invalid_arguments", f"arguments are not JSON: {exc}")
        arguments = {} if arguments is None else arguments
        errors = sorted(self._validators[name].iter_errors(arguments), key=lambda e: e.path)
        if errors:
            TOOL_CALLS.labels(tool=name, outcome="invalid_arguments").inc()
            detail = "; ".join(
                f"{'/'.join(str(p) for p in e.path) or '(arguments)'}: {e.message}" for e in errors
            )
            return failed("invalid_arguments", detail)
        try:
            result = await asyncio.wait_for(tool.handler(arguments), timeout=self._timeout_s)
        except TimeoutError:
            TOOL_CALLS.labels(tool=name, outcome="timeout").inc()
            return failed("timeout", f"{name} did not finish within {self._timeout_s:g}s")
        except ToolError as exc:
            TOOL_CALLS.labels(tool=name, outcome=exc.kind).inc()
            return failed(exc.kind, str(exc))
        except Exception as exc:
            logger.exception(f"tools: {name} failed")
            TOOL_CALLS.labels(tool=name, outcome="error").inc()
            return failed("failed", f"{type(exc).__name__}: {exc}")
        TOOL_CALLS.labels(tool=name, outcome="ok").inc()
        return ok(result)


# -- built-in tools ------------------------------------------------------------


def memory_tools(memory: MemoryStore, user_id: Callable[[], str]) -> list[Tool]:
    """``remember``, ``recall`` and ``forget`` on the user's long-term memory."""

    def need_memory() -> None:
        if not memory.available:
            raise ToolError("unavailable", f"memory is unavailable: {memory.error or 'not open'}")

    async def remember(args: dict[str, Any]) -> dict[str, Any]:
        need_memory()
        memory_id = memory.remember(user_id(), args["fact"], kind="fact")
        if memory_id is None:
            raise ToolError("unavailable", "the memory store could not save this")
        return {"remembered": args["fact"], "id": memory_id}

    async def recall(args: dict[str, Any]) -> dict[str, Any]:
        need_memory()
        items = memory.recall(user_id(), args["query"], limit=args.get("limit", 5))
        return {"memories": [format_item(i)[2:] for i in items]}

    async def forget(args: dict[str, Any]) -> dict[str, Any]:
        need_memory()
        return {"forgotten": memory.forget(user_id(), args["query"])}

    return [
        Tool(
            "remember",
            "Store a fact about the user for later conversations.",
            {
                "fact": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1000,
                    "description": "The fact, as a short sentence.",
                }
            },
            remember,
            ["fact"],
        ),
        Tool(
            "recall",
            "Search what you remember about the user.",
            {
                "query": {"type": "string", "minLength": 1, "description": "What to look for."},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 20,
                    "description": "Most memories to return (default 5).",
                },
            },
            recall,
            ["query"],
        ),
        Tool(
            "forget",
            "Delete memories that contain all the words of the query.",
            {"query": {"type": "string", "minLength": 1, "description": "Words to forget."}},
            forget,
            ["query"],
        ),
    ]


def time_tool(clock: Callable[[], dt.datetime] | None = None) -> Tool:
    """``current_time``: the date and time, in a given IANA time zone (default UTC)."""

    async def current_time(args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("timezone") or "UTC"
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolError("invalid_arguments", f"unknown time zone {name!r}") from exc
        now = (clock() if clock else dt.datetime.now(dt.UTC)).astimezone(zone)
        return {
            "timezone": name,
            "iso": now.isoformat(timespec="seconds"),
            "spoken": now.strftime("%A %d %B %Y, %H:%M"),
        }

    return Tool(
        "current_time",
        "The current date and time.",
        {"timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/Paris."}},
        current_time,
    )


def _consul_api(config: DiscoveryConfig) -> consul.Consul:
    url = urllib.parse.urlsplit(config.resolved_consul_addr())
    return consul.Consul(
        host=url.hostname or "127.0.0.1",
        port=url.port or (443 if url.scheme == "https" else 8500),
        scheme=url.scheme or "http",
        token=config.resolved_consul_token() or None,
    )


def vision_tool(tools: ToolsConfig, discovery: DiscoveryConfig) -> Tool:
    """``describe_scene``: ask the vision service what the camera sees."""

    def find_vision() -> str:
        if tools.vision_url:
            return tools.vision_url.rstrip("/")
        if discovery.mode != "consul":
            raise ToolError(
                "unavailable",
                "no vision service: set twin.tools.vision_url or run discovery in consul mode",
            )
        _, entries = _consul_api(discovery).health.service(discovery.vision_service, passing=True)
        found = experts_from_health(entries)
        if not found:
            raise ToolError(
                "unavailable", f"no healthy {discovery.vision_service!r} service in Consul"
            )
        return found[0].base_url.removesuffix("/v1")

    async def describe_scene(args: dict[str, Any]) -> dict[str, Any]:
        base = await asyncio.to_thread(find_vision)
        question = args.get("question") or "Describe the scene briefly."
        try:
            async with httpx.AsyncClient(timeout=tools.timeout_s) as client:
                response = await client.post(f"{base}/describe", json={"question": question})
                response.raise_for_status()
                body = response.json()
        except httpx.HTTPError as exc:
            raise ToolError("unavailable", f"vision service at {base} failed: {exc}") from exc
        description = body.get("description") if isinstance(body, dict) else None
        if not isinstance(description, str):
            raise ToolError("failed", f"vision service at {base} answered without a description")
        return {"description": description}

    return Tool(
        "describe_scene",
        "Describe what the camera currently sees.",
        {"question": {"type": "string", "description": "What to look for (optional)."}},
        describe_scene,
    )


def cluster_tool(discovery: DiscoveryConfig) -> Tool:
    """``cluster_status``: running experts (Consul) and jobs (Nomad)."""

    def status() -> dict[str, Any]:
        report: dict[str, Any] = {}
        try:
            _, entries = _consul_api(discovery).health.service(discovery.service, passing=True)
            report["experts"] = [
                {"name": e.name, "domain": e.domain, "model": e.model, "url": e.base_url}
                for e in experts_from_health(entries)
            ]
        except Exception as exc:
            report["experts_error"] = f"Consul: {type(exc).__name__}: {exc}"
        try:
            api = nomad.Nomad(
                address=discovery.resolved_nomad_addr(),
                token=discovery.resolved_nomad_token() or None,
                timeout=5,
            )
            report["jobs"] = [
                {
                    "id": j.get("ID"),
                    "namespace": j.get("Namespace"),
                    "type": j.get("Type"),
                    "status": j.get("Status"),
                }
                for j in api.jobs.get_jobs(namespace="*")
            ]
        except Exception as exc:
            report["jobs_error"] = f"Nomad: {type(exc).__name__}: {exc}"
        if "experts" not in report and "jobs" not in report:
            raise ToolError("unavailable", f"{report['experts_error']}; {report['jobs_error']}")
        return report

    async def cluster_status(args: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(status)

    return Tool(
        "cluster_status",
        "Which LLM experts and Nomad jobs are running in the cluster.",
        {},
        cluster_status,
    )


def builtin_tools(
    memory: MemoryStore,
    user_id: Callable[[], str],
    tools: ToolsConfig,
    discovery: DiscoveryConfig,
) -> list[Tool]:
    """All built-in tools."""
    return [
        *memory_tools(memory, user_id),
        time_tool(),
        vision_tool(tools, discovery),
        cluster_tool(discovery),
    ]
