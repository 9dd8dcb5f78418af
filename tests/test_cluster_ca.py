"""The collection CA (twin.cluster.cluster_ca), run with the real ansible-playbook.

Every key and certificate is made on the controller by community.crypto, as
the consul and nomad roles use it; the tests read them back with
``cryptography``: the chain to the CA, the names, the usages, the modes, and
what a second run, a change of names, a certificate near its end, an existing
CA and a CA brought by the user do.
"""

from __future__ import annotations

import datetime
import stat
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers.ansible import PlayResult, inventory, run_playbook

NODES = ["node1", "node2"]


def issue_play(extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each node asks for a server certificate of its own, named after it."""
    return [
        {
            "name": "Issue each node's certificate.",
            "hosts": "nodes",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Issue the certificate.",
                    "ansible.builtin.include_role": {
                        "name": "twin.cluster.cluster_ca",
                        "tasks_from": "issue",
                    },
                    "vars": {
                        "cluster_ca_issue_name": "{{ inventory_hostname }}",
                        "cluster_ca_issue_common_name": "{{ inventory_hostname }}.example",
                        "cluster_ca_issue_sans": "{{ sans[inventory_hostname] }}",
                        **(extra or {}),
                    },
                },
                {
                    "name": "Show what the role tells the caller.",
                    "ansible.builtin.debug": {
                        "msg": "issued {{ cluster_ca_issued.cert_file }}"
                        " {{ cluster_ca_issued.key_file }} changed={{ cluster_ca_issued.changed }}"
                    },
                },
            ],
        }
    ]


def sans_of(extra_ip: str = "10.0.0.5") -> dict[str, list[str]]:
    return {
        node: [f"DNS:{node}", f"IP:{extra_ip}", "DNS:localhost", "IP:127.0.0.1"] for node in NODES
    }


def run_issue(
    workdir: Path, sans: dict[str, list[str]], extra: dict[str, Any] | None = None
) -> PlayResult:
    return run_playbook(
        issue_play(extra),
        inventory({"nodes": NODES}, local=NODES),
        extra_vars={"sans": sans},
        workdir=workdir,
    )


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def san_strings(cert: x509.Certificate) -> set[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)} | {
        f"IP:{n}" for n in names.get_values_for_type(x509.IPAddress)
    }


def test_first_run_makes_the_ca_and_signs_each_nodes_certificate_second_run_changes_nothing(
    tmp_path: Path,
):
    first = run_issue(tmp_path, sans_of())
    assert first.returncode == 0, first.output
    ca_dir = tmp_path / ".credentials" / "ca"
    ca = load_cert(ca_dir / "ca.pem")
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / "ca.key") == 0o600
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "twin.cluster CA"
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert ca_key.public_key() == ca.public_key()

    for node in NODES:
        cert = load_cert(ca_dir / "issued" / f"{node}.pem")
        cert.verify_directly_issued_by(ca)
        assert san_strings(cert) == set(sans_of()[node])
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
        assert mode(ca_dir / "issued" / f"{node}.key") == 0o600
        key = serialization.load_pem_private_key(
            (ca_dir / "issued" / f"{node}.key").read_bytes(), None
        )
        assert key.public_key() == cert.public_key()
        issued = ca_dir / "issued"
        assert f"issued {issued}/{node}.pem {issued}/{node}.key changed=True" in first.stdout
    assert "PRIVATE KEY" not in first.output

    before = {p: p.read_bytes() for p in ca_dir.rglob("*") if p.is_file()}
    second = run_issue(tmp_path, sans_of())
    assert second.returncode == 0, second.output
    assert second.changed == 0, second.output
    assert {p: p.read_bytes() for p in ca_dir.rglob("*") if p.is_file()} == before
    assert "changed=False" in second.stdout
    assert "changed=True" not in second.stdout


def test_changed_names_are_issued_again_by_the_same_ca(tmp_path: Path):
    assert run_issue(tmp_path, sans_of()).returncode == 0
    ca_dir = tmp_path / ".credentials" / "ca"
    ca_before = (ca_dir / "ca.pem").read_bytes()
    old = load_cert(ca_dir / "issued" / "node1.pem")

    moved = run_issue(tmp_path, sans_of(extra_ip="10.0.0.9"))
    assert moved.returncode == 0, moved.output
    new = load_cert(ca_dir / "issued" / "node1.pem")
    assert new.serial_number != old.serial_number
    assert "IP:10.0.0.9" in san_strings(new)
    assert "IP:10.0.0.5" not in san_strings(new)
    assert (ca_dir / "ca.pem").read_bytes() == ca_before, "a name change must not touch the CA"
    new.verify_directly_issued_by(load_cert(ca_dir / "ca.pem"))
    assert "changed=True" in moved.stdout


def test_certificate_expiring_within_the_renewal_margin_is_issued_again(tmp_path: Path):
    short = {"cluster_ca_issue_not_after": "+10d", "cluster_ca_issue_usage": "both"}
    assert run_issue(tmp_path, sans_of(), short).returncode == 0
    ca_dir = tmp_path / ".credentials" / "ca"
    old = load_cert(ca_dir / "issued" / "node1.pem")
    usage = old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}

    renewed = run_issue(tmp_path, sans_of(), {"cluster_ca_issue_usage": "both"})
    assert renewed.returncode == 0, renewed.output
    new = load_cert(ca_dir / "issued" / "node1.pem")
    assert new.serial_number != old.serial_number
    left = new.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert left > datetime.timedelta(days=800)

    again = run_issue(tmp_path, sans_of(), {"cluster_ca_issue_usage": "both"})
    assert again.returncode == 0, again.output
    assert again.changed == 0, again.output


def make_own_ca(folder: Path, *, days: int = 365, ca: bool = True) -> tuple[Path, Path]:
    """A CA made outside the role, as a user would bring it."""
    folder.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Home Lab Root")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / "root.crt"
    key_file = folder / "root.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def own_ca_vars(cert_file: Path, key_file: Path) -> dict[str, Any]:
    return {
        "cluster_ca_generate": False,
        "cluster_ca_cert_file": str(cert_file),
        "cluster_ca_key_file": str(key_file),
    }


def test_a_ca_brought_by_the_user_signs_and_is_left_as_it_is(tmp_path: Path):
    cert_file, key_file = make_own_ca(tmp_path / "mine")
    before = (cert_file.read_bytes(), key_file.read_bytes())
    (tmp_path / "play").mkdir()
    result = run_issue(tmp_path / "play", sans_of(), own_ca_vars(cert_file, key_file))
    assert result.returncode == 0, result.output
    issued = tmp_path / "play" / ".credentials" / "ca" / "issued" / "node2.pem"
    load_cert(issued).verify_directly_issued_by(load_cert(cert_file))
    assert (cert_file.read_bytes(), key_file.read_bytes()) == before
    assert not (tmp_path / "play" / ".credentials" / "ca" / "ca.pem").exists()


def test_missing_own_ca_stops_with_the_variable_to_set(tmp_path: Path):
    missing = own_ca_vars(tmp_path / "nowhere.crt", tmp_path / "nowhere.key")
    result = run_issue(tmp_path, sans_of(), missing)
    assert result.returncode != 0
    assert "(cluster_ca_cert_file) does not exist and cluster_ca_generate is false" in result.output
    assert "(cluster_ca_key_file) does" in result.output


def test_an_existing_ca_is_never_replaced_and_an_unusable_one_stops_the_play(tmp_path: Path):
    assert run_issue(tmp_path, sans_of()).returncode == 0
    ca_dir = tmp_path / ".credentials" / "ca"
    ca_before = (ca_dir / "ca.pem").read_bytes()
    renamed = run_issue(tmp_path, sans_of(), {"cluster_ca_common_name": "Another name"})
    assert renamed.returncode == 0, renamed.output
    assert renamed.changed == 0, renamed.output
    assert (ca_dir / "ca.pem").read_bytes() == ca_before

    expired_cert, expired_key = make_own_ca(tmp_path / "old", days=-1)
    result = run_issue(tmp_path, sans_of(), own_ca_vars(expired_cert, expired_key))
    assert result.returncode != 0
    assert f"{expired_cert} (cluster_ca_cert_file) expired on" in result.output

    leaf_cert, leaf_key = make_own_ca(tmp_path / "leaf", ca=False)
    result = run_issue(tmp_path, sans_of(), own_ca_vars(leaf_cert, leaf_key))
    assert result.returncode != 0
    assert "is not a CA certificate" in result.output

    other_cert, _ = make_own_ca(tmp_path / "other")
    _, wrong_key = make_own_ca(tmp_path / "wrong")
    result = run_issue(tmp_path, sans_of(), own_ca_vars(other_cert, wrong_key))
    assert result.returncode != 0
    assert "does not belong to the key" in result.output


def test_bad_names_stop_before_anything_is_issued(tmp_path: Path):
    result = run_issue(tmp_path, {node: ["node1"] for node in NODES})
    assert result.returncode != 0
    assert 'entries like "DNS:node1"' in result.output
    assert not (tmp_path / ".credentials" / "ca" / "issued").exists()
