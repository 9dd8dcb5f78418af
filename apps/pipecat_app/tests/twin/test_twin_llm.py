"""The JSON-schema fallback's pieces: the reply schema, streaming the answer, parsing."""

from __future__ import annotations

import json

import jsonschema
import pytest

from pipecat_app.twin.llm import AnswerStreamer, fallback_schema, parse_fallback
from pipecat_app.twin.toolbox import Tool
from pipecat_app.twin.tools import current_time


def stream_in_pieces(raw: str, size: int) -> tuple[str, AnswerStreamer]:
    streamer = AnswerStreamer()
    out = "".join(streamer.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    return out, streamer


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 1000])
def test_answer_string_is_decoded_as_it_streams_whatever_the_chunking(size):
    answer = 'Olá "Ana" \\ tab\there,\nnew line é \u00e9 \U0001f600 done'
    raw = json.dumps({"answer": answer}) + "  "
    out, streamer = stream_in_pieces(raw, size)
    assert out == answer
    assert streamer.done
    assert streamer.mode == "answer"


def test_tool_call_reply_is_buffered_not_spoken():
    raw = json.dumps({"tool": "current_time", "arguments": {"timezone": "UTC"}})
    out, streamer = stream_in_pieces(raw, 4)
    assert out == ""
    assert streamer.mode == "tool"
    assert parse_fallback(streamer.raw) == {
        "tool": "current_time",
        "arguments": {"timezone": "UTC"},
    }


def test_parse_rejects_replies_that_are_not_the_requested_json():
    with pytest.raises(ValueError, match="no JSON object"):
        parse_fallback("Sure! Here you go.")
    with pytest.raises(ValueError, match="unexpected reply shape"):
        parse_fallback('{"something": 1}')


def test_reply_schema_accepts_an_answer_or_a_valid_call_only():
    tool = Tool(current_time)
    schema = fallback_schema([tool])
    jsonschema.validate({"answer": "hi"}, schema)
    jsonschema.validate({"tool": "current_time", "arguments": {"timezone": "UTC"}}, schema)
    for bad in (
        {"tool": "current_time", "arguments": {"zone": "UTC"}},  # unknown argument
        {"tool": "launch", "arguments": {}},  # unknown tool
        {"answer": 3},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    required = fallback_schema([tool], "required")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answer": "hi"}, required)
    assert fallback_schema([tool], "none") == fallback_schema([])
