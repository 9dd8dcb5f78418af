"""playbooks/benchmark.yml against two real llama-servers, given as a list or found in Consul.

Two SmolLM2 llama-servers (one slot each) stand for two experts on two
nodes. The playbook runs with the repo's ansible-playbook from an inventory
folder, so the JSON it writes next to the inventory can be read back. No
Consul runs here: the Consul case serves the app's hand-written health
answer (helpers.consul_experts) with its two experts moved onto the two
servers. Requests are few and short (3 timed requests of at most 8 tokens).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.ansible import PlayResult, inventory, run_playbook, write_inventory
from helpers.consul_experts import health_answer, serving_experts
from helpers.llama_server import LlamaServer
from helpers.llm_skip import smollm2_server_or_skip
from helpers.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "playbooks" / "benchmark.yml"
sys.path.insert(0, str(ROOT / ".cache" / "collections"))

from ansible_collections.twin.cluster.plugins.module_utils.expert_bench import (  # noqa: E402
    Endpoint,
    experts_from_health,
    stream_chat,
)

FAST = {"twin_benchmark_requests": 3, "twin_benchmark_max_tokens": 8, "twin_benchmark_timeout": 60}
CONSUL_TOKEN = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9"
API_KEY = "sk-expert-5e5e5e5e"


@pytest.fixture(scope="module")
def two_servers() -> Iterator[tuple[LlamaServer, LlamaServer]]:
    with smollm2_server_or_skip() as first, smollm2_server_or_skip() as second:
        yield first, second


def run_benchmark(workdir: Path, extra_vars: dict[str, Any], *args: str) -> PlayResult:
    folder = workdir / "inventory"
    write_inventory(folder, inventory())
    return run_playbook(PLAYBOOK, folder, *args, extra_vars={**FAST, **extra_vars})


def written(workdir: Path) -> dict[str, Any]:
    [path] = sorted((workdir / "inventory").glob("benchmark-experts-*.json"))
    return json.loads(path.read_text())


def assert_plausible(row: dict[str, Any]) -> None:
    """Figures a 135M model on one CPU thread gives: tens to thousands of ms, 1-2000 tok/s."""
    assert "error" not in row, row
    assert row["requests"] == 3
    assert 0 < row["ttft_ms"]["p50"] <= row["ttft_ms"]["p90"] < 30_000, row
    assert row["tokens_per_s"], row
    assert 1 < row["tokens_per_s"]["p50"] < 2_000, row
    assert all(sample["tokens"] >= 1 for sample in row["samples"]), row


def test_given_experts_are_measured_into_one_table_and_json(two_servers, tmp_path):
    first, second = two_servers
    experts = [
        {"name": "general", "url": first.base_url, "model": "smollm2-135m"},
        {"name": "code", "url": second.base_url, "model": "smollm2-135m", "node": "node2"},
    ]
    result = run_benchmark(tmp_path, {"twin_benchmark_experts": experts})
    assert result.returncode == 0, result.output

    report = written(tmp_path)
    assert report["source"] == "list"
    rows = {row["name"]: row for row in report["experts"]}
    assert set(rows) == {"general", "code"}
    assert rows["general"]["node"] == "127.0.0.1"
    assert rows["code"]["node"] == "node2"
    for row in rows.values():
        assert_plausible(row)
    header = next(line for line in result.stdout.splitlines() if "TTFT p50 ms" in line)
    assert "tok/s p50" in header
    for name, row in rows.items():
        line = next(line for line in result.stdout.splitlines() if f'"{name} ' in line)
        assert row["url"] in line
        assert f"{row['ttft_ms']['p50']:.0f}" in line


def test_experts_are_found_in_consul_as_the_app_finds_them(two_servers, tmp_path):
    first, second = two_servers
    where = {"general": first.base_url, "code": second.base_url}
    with serving_experts(where, tmp_path) as consul:
        result = run_benchmark(
            tmp_path,
            {"twin_benchmark_consul_addr": consul.url, "twin_benchmark_consul_token": CONSUL_TOKEN},
        )
        [asked] = consul.requests_to("GET", "/v1/health/service/llm-expert")
    assert result.returncode == 0, result.output
    assert asked.query.get("passing") == ["true"]
    assert asked.header("X-Consul-Token") == CONSUL_TOKEN
    assert CONSUL_TOKEN not in result.output

    report = written(tmp_path)
    assert report["source"] == "consul:llm-expert"
    rows = {row["name"]: row for row in report["experts"]}
    assert set(rows) == {"general", "code"}  # meta expert; the service ID is kept too
    assert rows["general"]["service_id"].endswith("-group-rank-0-llm-expert-http")
    assert (rows["general"]["node"], rows["general"]["url"]) == ("node1", first.base_url)
    assert (rows["code"]["node"], rows["code"]["url"]) == ("node2", second.base_url)
    assert rows["code"]["model"] == "qwen2.5-coder-1.5b"  # the meta, as the app reads it
    for row in rows.values():
        assert_plausible(row)


def test_a_dead_expert_fails_the_play_by_name_and_keeps_the_others(two_servers, tmp_path):
    first, _ = two_servers
    dead = f"http://127.0.0.1:{free_port()}/v1"
    experts = [
        {"name": "general", "url": first.base_url},
        {"name": "gone", "url": dead, "api_key": API_KEY},
    ]
    result = run_benchmark(tmp_path, {"twin_benchmark_experts": experts}, "-vvv")
    assert result.returncode != 0
    assert f"expert gone: {dead}/chat/completions is unreachable" in result.output
    assert "Connection refused" in result.output
    assert API_KEY not in result.output

    rows = {row["name"]: row for row in written(tmp_path)["experts"]}
    assert_plausible(rows["general"])
    assert "unreachable" in rows["gone"]["error"]
    assert "ttft_ms" not in rows["gone"]


def test_an_unreachable_consul_fails_with_what_to_set(tmp_path):
    consul = f"http://127.0.0.1:{free_port()}"
    result = run_benchmark(tmp_path, {"twin_benchmark_consul_addr": consul})
    assert result.returncode != 0
    assert f"Consul at {consul} did not list the service llm-expert" in result.output
    assert "twin_benchmark_experts" in result.output


def test_check_mode_only_asks_for_the_model_list_and_writes_nothing(two_servers, tmp_path):
    first, _ = two_servers
    experts = [{"name": "general", "url": first.base_url}]
    result = run_benchmark(tmp_path, {"twin_benchmark_experts": experts}, "--check")
    assert result.returncode == 0, result.output
    line = next(line for line in result.stdout.splitlines() if '"general ' in line)
    assert line.rstrip('",').endswith("reachable")  # no figures: nothing was generated
    assert not list((tmp_path / "inventory").glob("benchmark-experts-*.json"))


def test_consul_discovery_reads_the_apps_fixture_as_the_app_does():
    """Passing instances only; address, port, meta scheme/base_path/model as discovery.py."""
    answer = health_answer({})["body"]
    failing = json.loads(json.dumps(answer[1]))
    failing["Service"]["ID"] = "failing"
    failing["Checks"][0]["Status"] = "critical"
    https6 = json.loads(json.dumps(answer[0]))
    https6["Service"].update(ID="tls6", Address="fd00::5")
    https6["Service"]["Meta"].update(scheme="https", base_path="api/v1")
    found = experts_from_health([*answer, failing, https6])
    assert [(e["name"], e["node"], e["url"], e["model"], e["domain"]) for e in found] == [
        ("code", "node2", "http://192.168.1.22:21934/v1", "qwen2.5-coder-1.5b", "code"),
        ("general", "node1", "http://192.168.1.21:28080/v1", "smollm2-135m", "general"),
        ("general", "node1", "https://[fd00::5]:28080/api/v1", "smollm2-135m", "general"),
    ]
    assert found[2]["service_id"] == "tls6"


def _burst_server(timings: dict[str, Any] | None) -> Any:
    """A server that sends a whole streamed answer in one write, as a loaded link delivers it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    chunks = [{"choices": [{"delta": {"content": f" w{i}"}}]} for i in range(8)]
    if timings is not None:
        chunks.append({"choices": [], "timings": timings})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_decode_rate_is_llama_server_s_own_when_it_reports_one():
    server = _burst_server({"prompt_n": 12, "predicted_per_second": 42.5})
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        sample = stream_chat(Endpoint(url), "Hi?", max_tokens=8)
    finally:
        server.shutdown()
    assert (sample.tokens, sample.prompt_evaluated) == (8, 12)
    assert sample.tokens_per_s == 42.5  # not the burst's thousands a second
