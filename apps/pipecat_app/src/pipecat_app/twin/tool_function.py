"""A tool written as a typed async function, its JSON schema read from the code.

pipecat 1.x calls these "direct functions": the name, the description and the
arguments' JSON schemas come from the function's signature and its
Google-style docstring (``Args:``), through pipecat's own
``BaseDirectFunctionWrapper``. :class:`ToolFunction` is that wrapper for
TwinService's tools, with two differences:

- The first parameter is ``ctx`` (a ``ToolContext``: memory, user, config,
  clock), not pipecat's ``params: FunctionCallParams``. TwinService runs the
  tools itself, for native tool calls and for the JSON-schema fallback alike,
  not through a pipecat LLM service, so there is no ``FunctionCallParams`` to
  give; the context is what a tool needs instead.
- What pipecat's wrapper leaves out (its own TODO: "check if each type is a
  pydantic type and use its convert-to-jsonschema function") is filled in by
  pydantic from the full annotation: ``Literal[...]`` becomes ``enum``,
  ``Annotated[T, pydantic.Field(...)]`` adds ``minLength``/``maxLength``/
  ``minimum``/``maximum``..., and a default value becomes ``default``.

Every tool must have a description and a described, annotated parameter each:
the model sees nothing else. The built-in tools (:mod:`pipecat_app.twin.tools`,
``recall`` for one) are written this way.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal, get_origin, get_type_hints

import docstring_parser
from pipecat.adapters.llm.schemas.direct_function import BaseDirectFunctionWrapper
from pydantic import TypeAdapter

ToolFunctionType = Callable[..., Awaitable[Any]]


class ToolFunction(BaseDirectFunctionWrapper):
    """pipecat's direct-function wrapper for ``async def tool(ctx, ...)``.

    Args:
        function: The tool: async, first parameter ``ctx``, every other
            parameter annotated and described under ``Args:``.

    Raises:
        Exception: (pipecat's) when the function is not async or its first
            parameter is not ``ctx``.
        TypeError: when the description, a parameter's annotation or a
            parameter's description is missing, or a default is not JSON.
    """

    @classmethod
    def special_first_param_name(cls) -> str:
        """The parameter pipecat's metadata extraction skips: the tool context."""
        return "ctx"

    def _initialize_metadata(self) -> None:
        super()._initialize_metadata()
        where = f"tool {self.name}"
        if not self.description:
            raise TypeError(f"{where}: the docstring's first line (the description) is missing")
        for name, schema in self.properties.items():
            if not schema.get("description"):
                raise TypeError(f"{where}: argument {name!r} has no description under Args:")

    def _get_parameters_as_jsonschema(
        self, func: Callable, docstring_params: list[docstring_parser.DocstringParam]
    ) -> tuple[dict[str, Any], list[str]]:
        properties, required = super()._get_parameters_as_jsonschema(func, docstring_params)
        hints = get_type_hints(func, include_extras=True)
        parameters = inspect.signature(func).parameters
        for name, schema in properties.items():
            hint = hints.get(name)
            if hint is None:
                raise TypeError(f"tool {func.__name__}: argument {name!r} has no type annotation")
            if get_origin(hint) in (Annotated, Literal):
                refined = TypeAdapter(hint).json_schema()
                refined.pop("title", None)
                refined.pop("description", None)
                description = schema.pop("description", None)
                schema.update(refined)
                if description is not None:
                    schema["description"] = description
            default = parameters[name].default
            if default is not inspect.Parameter.empty:
                try:
                    json.dumps(default)
                except TypeError as exc:
                    raise TypeError(
                        f"tool {func.__name__}: default of {name!r} is not JSON: {default!r}"
                    ) from exc
                schema["default"] = default
        return properties, required

    def coerce(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments as the function's types want them.

        JSON schema counts ``5.0`` as an integer; an ``int`` parameter gets ``5``.
        """
        return {
            name: int(value)
            if isinstance(value, float) and self.properties.get(name, {}).get("type") == "integer"
            else value
            for name, value in arguments.items()
        }

    async def invoke(self, args: Mapping[str, Any], ctx: Any) -> Any:
        """Run the tool with validated ``args`` and its context."""
        return await self.function(ctx, **self.coerce(args))
