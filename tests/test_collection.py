"""The repository is an Ansible collection that builds, installs and resolves.

These run the real ansible-galaxy, ansible-doc and ansible-playbook from the
project's environment; nothing is mocked.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
PUBLIC_ROLES = [r for r in ROLES if not r.startswith("hashicorp_")]
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the tarball and install it into an empty collections path."""
    dist = tmp_path_factory.mktemp("dist")
    run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(dist)])
    tarballs = list(dist.glob("twin-cluster-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    with tarfile.open(tarballs[0]) as tar:
        names = tar.getnames()
    assert "MANIFEST.json" in names
    assert not [n for n in names if n.startswith((".venv", ".cache", ".git/"))], "build leaks"
    assert not [n for n in names if "credentials/" in n], "secrets must never be packaged"
    dest = tmp_path_factory.mktemp("collections")
    # Outside the checkout's ansible.cfg, which links the checkout itself.
    cfg = dest / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    env = {"ANSIBLE_CONFIG": str(cfg), "ANSIBLE_COLLECTIONS_PATH": str(dest)}
    install = ["ansible-galaxy", "collection", "install", "--no-deps", "-p", str(dest)]
    run([*install, str(tarballs[0])], env=env)
    path = dest / "ansible_collections" / "twin" / "cluster"
    assert (path / "galaxy.yml").exists() or (path / "MANIFEST.json").exists()
    return dest


def test_galaxy_metadata_names_the_collection() -> None:
    meta = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert (meta["namespace"], meta["name"]) == ("twin", "cluster")
    assert meta["version"] == "0.1.0"
    for key in ("license", "description", "tags", "repository"):
        assert meta[key], f"galaxy.yml: {key} is empty"
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"].startswith(">=")


# Collection names as they appear in module FQCNs and filter/lookup calls.
_FQCN = re.compile(r"\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")


def _installed_collection_version(fqcn: str) -> str:
    """The version of ``fqcn`` in the ansible package the tests run with.

    Found through the package's files, not ``import ansible_collections``:
    once a test has loaded Ansible's plugins, its collection finder owns that
    name and its path may leave the package out.
    """
    namespace, name = fqcn.split(".")
    manifest = Path(
        importlib.metadata.distribution("ansible").locate_file(
            f"ansible_collections/{namespace}/{name}/MANIFEST.json"
        )
    )
    if not manifest.exists():
        raise FileNotFoundError(f"{fqcn}: not in the ansible package ({manifest})")
    return json.loads(manifest.read_text())["collection_info"]["version"]


def test_galaxy_dependencies_are_what_the_content_calls_from_the_tested_versions() -> None:
    """Every collection a role, playbook or plugin calls is a dependency, nothing
    else is, and each one's minimum is the version the tests run against."""
    installed = set()
    for base in ("roles", "playbooks", "plugins"):
        for path in (ROOT / base).rglob("*"):
            if path.suffix not in {".yml", ".yaml", ".py", ".j2"}:
                continue
            for namespace, name in _FQCN.findall(path.read_text()):
                fqcn = f"{namespace}.{name}"
                if namespace in {"ansible", "twin"}:
                    continue
                try:
                    _installed_collection_version(fqcn)
                except FileNotFoundError:
                    continue  # a dotted name that is no collection (item.stat, a file name)
                installed.add(fqcn)
    meta = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert set(meta["dependencies"]) == installed
    for fqcn, spec in meta["dependencies"].items():
        assert spec == f">={_installed_collection_version(fqcn)}", (
            f"galaxy.yml allows {fqcn} {spec}; the tests run {_installed_collection_version(fqcn)}"
        )


def test_built_collection_installs_and_exposes_roles_and_playbooks(
    installed_collection: Path,
) -> None:
    env = {
        "ANSIBLE_COLLECTIONS_PATH": str(installed_collection),
        "ANSIBLE_CONFIG": str(installed_collection / "ansible.cfg"),
    }
    listing = run(["ansible-doc", "-t", "role", "-l", "twin.cluster"], env=env)
    for role in PUBLIC_ROLES:
        assert f"twin.cluster.{role}" in listing, listing
    # The playbooks are usable by their collection names, from anywhere.
    run(
        [
            "ansible-playbook",
            "--syntax-check",
            "-i",
            str(ROOT / "inventory" / "example"),
            "twin.cluster.site",
        ],
        env=env,
        cwd=installed_collection,
    )


@pytest.mark.parametrize("role", PUBLIC_ROLES)
def test_every_role_documents_its_arguments(role: str) -> None:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    undocumented = sorted(set(defaults) - set(options))
    assert not undocumented, f"defaults of {role} missing from argument_specs: {undocumented}"
    for name, spec in options.items():
        assert spec.get("description"), f"{role}: {name} has no description"
        assert spec.get("type"), f"{role}: {name} has no type"
    readme = (ROOT / "roles" / role / "README.md").read_text()
    missing = sorted(name for name in defaults if name not in readme)
    assert not missing, f"README of {role} does not mention: {missing}"
    doc = run(["ansible-doc", "-t", "role", f"twin.cluster.{role}"], env={"ANSIBLE_NOCOLOR": "1"})
    assert "ENTRY POINT: *main*" in doc


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
@pytest.mark.parametrize("inventory", ["example", "local"])
def test_playbook_syntax(playbook: Path, inventory: str) -> None:
    run(["ansible-playbook", "--syntax-check", "-i", f"inventory/{inventory}", str(playbook)])
