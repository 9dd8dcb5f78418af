"""hashicorp_release (used by the consul and nomad roles) against a local release mirror.

A real HTTP server serves a release tree in HashiCorp's layout; the role runs
with ansible-playbook on this machine, installing into a temporary directory.
The archived executable is a stand-in that only answers `consul version`; the
NVIDIA plugin stand-in, like the real plugin, answers nothing when run by hand.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers.ansible import PlayResult, run_playbook

VERSION = "1.22.6"
ZIP = f"consul_{VERSION}_linux_amd64.zip"


def install_play(
    name: str, release: dict[str, str], *after: dict[str, Any]
) -> list[dict[str, Any]]:
    """A play on localhost that includes hashicorp_release with ``release`` (then ``after``)."""
    return [
        {
            "name": name,
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": True,
            "gather_subset": ["min"],
            "tasks": [
                {
                    "name": "Install.",
                    "ansible.builtin.include_role": {"name": "hashicorp_release"},
                    "vars": {
                        **release,
                        "hashicorp_release_download_base_url": "{{ base_url }}",
                        "hashicorp_release_cache_dir": "{{ workdir }}/cache",
                    },
                },
                *after,
            ],
        }
    ]


PLAY = install_play(
    "Install Consul with hashicorp_release.",
    {
        "hashicorp_release_product": "consul",
        "hashicorp_release_version": "{{ version }}",
        "hashicorp_release_bin_dir": "{{ workdir }}/bin",
    },
)


def write_release(root: Path, reported_version: str) -> None:
    release = root / "consul" / VERSION
    release.mkdir(parents=True)
    script = (
        f'#!/bin/sh\n[ "$1" = version ] && echo "Consul v{reported_version}" && exit 0\nexit 1\n'
    )
    info = zipfile.ZipInfo("consul")
    info.external_attr = 0o100755 << 16
    with zipfile.ZipFile(release / ZIP, "w") as archive:
        archive.writestr(info, script)
    digest = hashlib.sha256((release / ZIP).read_bytes()).hexdigest()
    decoy = hashlib.sha256(b"arm64").hexdigest()
    (release / f"consul_{VERSION}_SHA256SUMS").write_text(
        f"{decoy}  consul_{VERSION}_linux_arm64.zip\n{digest}  {ZIP}\n"
    )


class Mirror:
    def __init__(self, root: Path) -> None:
        self.paths: list[str] = []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.paths.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    write_release(root, getattr(request, "param", VERSION))
    served = Mirror(root)
    yield served
    served.close()


def install(workdir: Path, mirror: Mirror) -> PlayResult:
    extra_vars = {"version": VERSION, "base_url": mirror.url, "workdir": str(workdir)}
    return run_playbook(PLAY, "localhost,", extra_vars=extra_vars, workdir=workdir)


@pytest.mark.slow
def test_installed_version_is_not_downloaded_again(tmp_path: Path, mirror: Mirror):
    first = install(tmp_path, mirror)
    assert first.returncode == 0, first.stdout + first.stderr
    binary = tmp_path / "bin" / "consul"
    assert oct(binary.stat().st_mode & 0o777) == "0o755"
    version = subprocess.run([binary, "version"], capture_output=True, text=True, check=True)
    assert version.stdout.splitlines()[0] == f"Consul v{VERSION}"
    assert mirror.paths == [
        f"/consul/{VERSION}/consul_{VERSION}_SHA256SUMS",
        f"/consul/{VERSION}/{ZIP}",
    ]

    second = install(tmp_path, mirror)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(mirror.paths) == 2, mirror.paths
    assert re.search(r"localhost\s+:\s+ok=\d+\s+changed=0", second.stdout), second.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mirror", ["1.22.5"], indirect=True)
def test_archive_holding_another_version_is_refused(tmp_path: Path, mirror: Mirror):
    result = install(tmp_path, mirror)
    assert result.returncode != 0
    assert f"reports 'Consul v1.22.5', expected 'Consul v{VERSION}'" in result.stdout


PLUGIN = "nomad-device-nvidia"
PLUGIN_VERSION = "1.1.0"
PLUGIN_ZIP = f"{PLUGIN}_{PLUGIN_VERSION}_linux_amd64.zip"
PLUGIN_PLAY = install_play(
    "Install Nomad's NVIDIA device plugin with hashicorp_release.",
    {
        "hashicorp_release_product": "nomad-device-nvidia",
        "hashicorp_release_version": "1.1.0",
        "hashicorp_release_bin_dir": "{{ workdir }}/plugins",
    },
    {
        "name": "Show whether the binary changed.",
        "ansible.builtin.debug": {"msg": "plugin changed: {{ hashicorp_release_changed }}"},
    },
)


@pytest.fixture
def plugin_mirror(tmp_path: Path) -> Iterator[Mirror]:
    """A release of a plugin that, like the real one, refuses to run by hand."""
    release = tmp_path / "mirror" / PLUGIN / PLUGIN_VERSION
    release.mkdir(parents=True)
    info = zipfile.ZipInfo(PLUGIN)
    info.external_attr = 0o100755 << 16
    with zipfile.ZipFile(release / PLUGIN_ZIP, "w") as archive:
        archive.writestr(info, '#!/bin/sh\necho "This binary is a plugin." >&2\nexit 1\n')
    digest = hashlib.sha256((release / PLUGIN_ZIP).read_bytes()).hexdigest()
    (release / f"{PLUGIN}_{PLUGIN_VERSION}_SHA256SUMS").write_text(f"{digest}  {PLUGIN_ZIP}\n")
    served = Mirror(tmp_path / "mirror")
    yield served
    served.close()


def install_plugin(workdir: Path, mirror: Mirror) -> PlayResult:
    extra_vars = {"base_url": mirror.url, "workdir": str(workdir)}
    return run_playbook(PLUGIN_PLAY, "localhost,", extra_vars=extra_vars, workdir=workdir)


@pytest.mark.slow
def test_plugin_is_installed_once_and_again_only_when_its_binary_no_longer_matches(
    tmp_path: Path, plugin_mirror: Mirror
):
    first = install_plugin(tmp_path, plugin_mirror)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "plugin changed: True" in first.stdout
    binary = tmp_path / "plugins" / PLUGIN
    assert oct(binary.stat().st_mode & 0o777) == "0o755"
    record = (tmp_path / "cache" / f"{PLUGIN}.installed.json").read_text()
    assert hashlib.sha256(binary.read_bytes()).hexdigest() in record
    assert plugin_mirror.paths == [
        f"/{PLUGIN}/{PLUGIN_VERSION}/{PLUGIN}_{PLUGIN_VERSION}_SHA256SUMS",
        f"/{PLUGIN}/{PLUGIN_VERSION}/{PLUGIN_ZIP}",
    ]

    # Installed: nothing fetched, nothing changed (the binary cannot be asked its version).
    second = install_plugin(tmp_path, plugin_mirror)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "plugin changed: False" in second.stdout
    assert len(plugin_mirror.paths) == 2, plugin_mirror.paths
    assert re.search(r"localhost\s+:\s+ok=\d+\s+changed=0", second.stdout), second.stdout

    # A damaged binary no longer matches the record: checked again and replaced.
    original = binary.read_bytes()
    binary.write_bytes(original + b"damaged\n")
    third = install_plugin(tmp_path, plugin_mirror)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "plugin changed: True" in third.stdout
    assert binary.read_bytes() == original
    assert (
        plugin_mirror.paths[2] == f"/{PLUGIN}/{PLUGIN_VERSION}/{PLUGIN}_{PLUGIN_VERSION}_SHA256SUMS"
    )
