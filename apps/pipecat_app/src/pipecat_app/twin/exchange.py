"""Tool exchanges as chat messages: the OpenAI form, and plain text for the fallback.

A tool round is kept in the OpenAI form everywhere (the turn's own exchange
and, through pipecat's assistant aggregator, the ``LLMContext``): an assistant
message with ``tool_calls``, then one ``tool`` message per call. Experts with
native tool calls get it as is. An expert without them (the JSON-schema
fallback, see :mod:`pipecat_app.twin.llm`) would be handed roles and fields
its chat template may not render, so :func:`as_plain_text` rewrites the
exchange in the fallback's own words: the call as the JSON reply the model
writes, the result as a user message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pipecat_app.twin.llm import ToolCall

#: Appended to the results that end a fallback request: the model answers now.
ANSWER_NOW = "Now answer the user's last message using it."


def call_message(said: str, calls: Sequence[ToolCall]) -> dict[str, Any]:
    """The assistant message of one tool round (``said``: text streamed before the calls)."""
    return {
        "role": "assistant",
        "content": said or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }


def result_message(call: ToolCall, result: dict[str, Any]) -> dict[str, Any]:
    """The ``tool`` message answering ``call``."""
    return {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}


def call_arguments(text: Any) -> Any:
    """A call's arguments as the model wrote them, parsed when they are JSON."""
    try:
        return json.loads(text) if isinstance(text, str) else (text or {})
    except json.JSONDecodeError:
        return text


def as_plain_text(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with every tool exchange in the fallback's words.

    An assistant message with ``tool_calls`` becomes the text said before
    them plus one ``{"tool": ..., "arguments": ...}`` line per call; a
    ``tool`` message becomes a user message "Result of tool <name>: ...".
    When the messages end with results (a turn between tool rounds), the last
    one asks for the answer. Other messages are unchanged.
    """
    names: dict[str, str] = {}
    plain: list[dict[str, Any]] = []
    for message in messages:
        calls = message.get("tool_calls")
        if message.get("role") == "assistant" and calls:
            lines = [message["content"]] if message.get("content") else []
            for call in calls:
                function = call.get("function", {})
                names[call.get("id", "")] = function.get("name", "")
                arguments = call_arguments(function.get("arguments"))
                lines.append(json.dumps({"tool": function.get("name"), "arguments": arguments}))
            plain.append({"role": "assistant", "content": "\n".join(lines)})
        elif message.get("role") == "tool":
            name = names.get(message.get("tool_call_id", ""), "")
            plain.append(
                {"role": "user", "content": f"Result of tool {name}: {message.get('content')}"}
            )
        else:
            plain.append(message)
    if messages and messages[-1].get("role") == "tool":
        plain[-1] = {**plain[-1], "content": f"{plain[-1]['content']}\n{ANSWER_NOW}"}
    return plain
