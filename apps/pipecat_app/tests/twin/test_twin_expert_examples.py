"""Example utterances of an expert's domain: from Consul meta (example_N) and from the config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipecat_app.twin.config import ExpertConfig
from pipecat_app.twin.discovery import Expert, experts_from_health

from .conftest import load_fixture


def test_consul_meta_examples_are_read_in_order_up_to_the_first_gap():
    body = load_fixture("consul_health_llm-expert_100.json")["body"]
    meta = body[1]["Service"]["Meta"]
    meta.update(
        {
            "example_2": "why does my build fail",
            "example_1": "write a python function",
            "example_3": "explain this stack trace",
            "example_5": "after a gap: not read",
        }
    )
    by_domain = {e.domain: e for e in experts_from_health(body)}
    assert by_domain["code"].examples == (
        "write a python function",
        "why does my build fail",
        "explain this stack trace",
    )
    assert by_domain["general"].examples == ()


def test_configured_examples_reach_the_expert():
    cfg = ExpertConfig(name="h", domain="home", base_url="http://h/v1", examples=["lights off"])
    assert Expert.from_config(cfg).examples == ("lights off",)


@pytest.mark.parametrize(
    ("examples", "problem"),
    [
        (["x"] * 17, "at most 16 items"),
        (["x" * 513], "at most 512 characters"),
        ([""], "at least 1 character"),
    ],
)
def test_configured_examples_keep_to_the_consul_meta_limits(examples, problem):
    with pytest.raises(ValidationError, match=problem):
        ExpertConfig(name="h", base_url="http://h/v1", examples=examples)
