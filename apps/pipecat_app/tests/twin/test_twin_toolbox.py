"""The tool framework: schemas derived from typed functions, validation, timeouts, errors.

Tools defined here exercise the framework alone; the built-in tools are
tested in ``test_twin_tools.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

from pipecat_app.metrics import TOOL_CALLS
from pipecat_app.twin.toolbox import Tool, ToolBox, ToolContext

pytestmark = pytest.mark.anyio


def outcome(tool: str, kind: str) -> float:
    return TOOL_CALLS.labels(tool=tool, outcome=kind)._value.get()


async def explode(ctx: ToolContext) -> None:
    """Fails."""
    raise RuntimeError("boom")


async def hang(ctx: ToolContext) -> None:
    """Hangs."""
    await asyncio.sleep(5)


async def test_crashing_tool_returns_an_error_instead_of_raising():
    box = ToolBox([Tool(explode), Tool(hang)], timeout_s=0.2)
    before = outcome("explode", "error")
    assert await box.call("explode", {}) == {
        "ok": False,
        "error": {"type": "failed", "message": "RuntimeError: boom"},
    }
    assert outcome("explode", "error") == before + 1
    assert (await box.call("hang", {}))["error"]["type"] == "timeout"


async def book_table(
    ctx: ToolContext,
    name: Annotated[str, Field(min_length=1, max_length=40)],
    seats: Annotated[int, Field(ge=1, le=12)],
    area: Literal["inside", "terrace"] = "inside",
    note: str | None = None,
) -> dict[str, Any]:
    """Book a table at the restaurant.

    Only tables for tonight.

    Args:
        name: Who the table is for.
        seats: How many people.
        area: Where to sit.
        note: Anything the staff should know.

    Returns:
        What was booked (never sent to the model).
    """
    return {"name": name, "seats": seats, "area": area, "note": note, "user": ctx.user_id()}


def test_the_schema_is_derived_from_the_typed_function_and_its_docstring():
    tool = Tool(book_table)
    assert tool.name == "book_table"
    assert tool.description == "Book a table at the restaurant.\n\nOnly tables for tonight."
    assert tool.json_schema == {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 40,
                "description": "Who the table is for.",
            },
            "seats": {
                "type": "integer",
                "minimum": 1,
                "maximum": 12,
                "description": "How many people.",
            },
            "area": {
                "type": "string",
                "enum": ["inside", "terrace"],
                "default": "inside",
                "description": "Where to sit.",
            },
            "note": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "default": None,
                "description": "Anything the staff should know.",
            },
        },
        "required": ["name", "seats"],
        "additionalProperties": False,
    }


async def test_a_limit_given_when_the_tool_is_built_is_shown_and_enforced():
    tool = Tool(book_table, ToolContext(user_id=lambda: "ana"), limits={"seats": {"maximum": 4}})
    assert tool.properties["seats"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 4,
        "description": "How many people.",
    }
    box = ToolBox([tool])
    assert box.function_schemas()[0].properties["seats"]["maximum"] == 4
    refused = await box.call("book_table", {"name": "Ana", "seats": 5})
    assert refused["error"]["type"] == "invalid_arguments"
    assert (await box.call("book_table", {"name": "Ana", "seats": 4}))["ok"]
    # The function's own schema is left alone: another Tool of it has its own limits.
    assert Tool(book_table).properties["seats"]["maximum"] == 12


def test_a_limit_for_an_argument_the_function_lacks_is_refused():
    with pytest.raises(TypeError, match=r"book_table: limits for arguments it does not have"):
        Tool(book_table, limits={"chairs": {"maximum": 4}})


async def test_arguments_of_the_wrong_type_or_outside_the_annotations_are_invalid_arguments():
    box = ToolBox([Tool(book_table, ToolContext(user_id=lambda: "ana"))])
    for arguments, where, expected in (
        ({"name": 3, "seats": 2}, "name", "3 is not of type 'string'"),
        ({"name": "Ana", "seats": "two"}, "seats", "'two' is not of type 'integer'"),
        ({"name": "Ana", "seats": 13}, "seats", "13 is greater than the maximum of 12"),
        ({"name": "", "seats": 2}, "name", "should be non-empty"),
        ({"name": "Ana", "seats": 2, "area": "roof"}, "area", "'roof' is not one of"),
        ({"name": "Ana", "seats": 2, "note": 5}, "note", "5 is not valid under any"),
    ):
        result = await box.call("book_table", arguments)
        assert result["ok"] is False, arguments
        assert result["error"]["type"] == "invalid_arguments"
        assert result["error"]["message"].startswith(f"{where}: "), result
        assert expected in result["error"]["message"], result
    booked = await box.call("book_table", {"name": "Ana", "seats": 2.0})
    assert booked == {
        "ok": True,
        "result": {"name": "Ana", "seats": 2, "area": "inside", "note": None, "user": "ana"},
    }
    assert type(booked["result"]["seats"]) is int


async def undocumented(ctx: ToolContext, city: str) -> str:
    """Weather in a city."""
    return city


async def untyped(ctx: ToolContext, city) -> str:
    """Weather in a city.

    Args:
        city: The city.
    """
    return city


async def nameless(ctx: ToolContext) -> str:
    return ""


async def wrong_first(params: ToolContext) -> str:
    """Says hi."""
    return "hi"


def not_async(ctx: ToolContext) -> str:
    """Says hi."""
    return "hi"


async def opaque_default(ctx: ToolContext, when: dt.date = dt.date(2026, 1, 1)) -> str:
    """Says when.

    Args:
        when: The day.
    """
    return str(when)


@pytest.mark.parametrize(
    ("function", "complaint"),
    [
        (undocumented, "argument 'city' has no description under Args:"),
        (untyped, "argument 'city' has no type annotation"),
        (nameless, "the docstring's first line (the description) is missing"),
        (wrong_first, "first parameter must be named 'ctx'"),
        (not_async, "must be async"),
        (opaque_default, "default of 'when' is not JSON"),
    ],
)
def test_a_tool_the_model_could_not_use_is_refused_when_defined(function, complaint):
    with pytest.raises(Exception, match=re.escape(complaint)):
        Tool(function)
