"""``[twin.discovery]`` and ``[[twin.experts]]`` refused at start when they cannot work.

An address that is not an http(s) URL, or a CA or client certificate that
cannot be read, stops the app at start with the key (or environment
variable) named, through the app's real config loader, instead of failing
when the user first speaks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tls import make_ca

from pipecat_app.config import ConfigError, load_config
from pipecat_app.twin.config import DiscoveryConfig


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.toml"
    path.write_text(text)
    return path


def expert(base_url: str) -> str:
    return f'[[twin.experts]]\nname = "general"\nbase_url = "{base_url}"\n'


@pytest.mark.parametrize(
    "base_url",
    ["ftp://127.0.0.1:8080/v1", "127.0.0.1:8080/v1", "localhost:8080/v1", "http:///v1"],
)
def test_an_expert_base_url_that_is_not_http_is_refused_naming_the_key(tmp_path, base_url):
    path = config_file(tmp_path, expert(base_url))
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    message = str(refused.value)
    assert str(path) in message
    assert f"twin.experts.0.base_url: Value error, twin.experts.base_url {base_url!r}" in message
    assert "is not an http(s) URL" in message


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8080/v1", "https://expert.lan/v1"])
def test_http_and_https_expert_urls_load_as_written(tmp_path, base_url):
    config = load_config(config_file(tmp_path, expert(base_url)), environ={})
    assert config.twin.experts[0].base_url == base_url


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("consul_addr", "127.0.0.1:8500"),
        ("consul_addr", "ftp://127.0.0.1:8500"),
        ("consul_addr", "https://"),
        ("nomad_addr", "127.0.0.1:4646"),
        ("nomad_addr", "unix:///run/nomad.sock"),
    ],
)
def test_a_consul_or_nomad_address_that_is_not_http_is_refused_naming_the_key(tmp_path, key, value):
    path = config_file(tmp_path, f'[twin.discovery]\n{key} = "{value}"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert f"twin.discovery.{key} {value!r} is not an http(s) URL" in str(refused.value)


def test_https_addresses_and_an_empty_nomad_addr_load(tmp_path):
    path = config_file(
        tmp_path,
        '[twin.discovery]\nconsul_addr = "https://127.0.0.1:8501"\nnomad_addr = ""\n',
    )
    discovery = load_config(path, environ={}).twin.discovery
    assert (discovery.consul_addr, discovery.nomad_addr) == ("https://127.0.0.1:8501", "")


def test_consul_http_addr_may_be_host_and_port_as_hashicorp_documents(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.0.0.5:8501")
    monkeypatch.delenv("CONSUL_HTTP_SSL", raising=False)
    assert DiscoveryConfig().resolved_consul_addr() == "http://10.0.0.5:8501"
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    assert DiscoveryConfig().resolved_consul_addr() == "https://10.0.0.5:8501"
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "http://10.0.0.5:8500")  # a scheme is kept
    assert DiscoveryConfig().resolved_consul_addr() == "http://10.0.0.5:8500"


# -- the CA and the client certificate ---------------------------------------------


def test_a_missing_ca_file_stops_the_app_at_start_naming_the_key(tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    path = config_file(tmp_path, f'[twin.discovery]\nca_file = "{missing}"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    message = str(refused.value)
    assert str(path) in message
    assert f"twin.discovery.ca_file: {missing} cannot be read (No such file or directory)" in (
        message
    )


def test_a_ca_file_without_a_certificate_stops_the_app_at_start(tmp_path):
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    path = config_file(tmp_path, f'[twin.discovery]\nca_file = "{not_pem}"\n')
    with pytest.raises(ConfigError, match=r"twin\.discovery\.ca_file: .* holds no PEM certificate"):
        load_config(path, environ={})


@pytest.mark.parametrize("variable", ["CONSUL_CACERT", "NOMAD_CACERT"])
def test_an_unreadable_ca_in_the_environment_is_refused_naming_the_variable(
    tmp_path, monkeypatch, variable
):
    monkeypatch.setenv(variable, str(tmp_path / "gone.pem"))
    with pytest.raises(ValueError, match=rf"env {variable}: .*gone\.pem cannot be read"):
        DiscoveryConfig()


def test_a_readable_ca_loads_and_is_used_for_both_apis(tmp_path, monkeypatch):
    certs = make_ca(tmp_path)
    monkeypatch.setenv("CONSUL_CACERT", "/nonexistent/consul-ca.pem")  # ca_file wins
    discovery = DiscoveryConfig(ca_file=str(certs.ca))
    assert discovery.consul_tls().ca_file == discovery.nomad_tls().ca_file == str(certs.ca)
    assert discovery.nomad_tls().requests_verify == str(certs.ca)


def test_without_a_ca_requests_clients_trust_the_system_cas_like_the_watches(monkeypatch):
    monkeypatch.delenv("NOMAD_CACERT", raising=False)
    verify = DiscoveryConfig().nomad_tls().requests_verify
    # python-nomad verifies nothing when left to itself (verify=False).
    assert verify is not False
    assert verify is True or Path(verify).exists()


def test_a_client_certificate_without_its_key_is_refused(tmp_path):
    certs = make_ca(tmp_path)
    with pytest.raises(ValueError, match="set both the client certificate and its key"):
        DiscoveryConfig(client_cert_file=str(certs.cert))


def test_a_client_certificate_with_the_wrong_key_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mine, other = make_ca(tmp_path / "a"), make_ca(tmp_path / "b")
    with pytest.raises(ValueError, match="are not a PEM certificate and its key"):
        DiscoveryConfig(client_cert_file=str(mine.cert), client_key_file=str(other.key))


def test_client_certificates_come_from_the_environment_per_api(tmp_path, monkeypatch):
    certs = make_ca(tmp_path)
    monkeypatch.setenv("NOMAD_CLIENT_CERT", str(certs.cert))
    monkeypatch.setenv("NOMAD_CLIENT_KEY", str(certs.key))
    monkeypatch.delenv("CONSUL_CLIENT_CERT", raising=False)
    monkeypatch.delenv("CONSUL_CLIENT_KEY", raising=False)
    discovery = DiscoveryConfig()
    assert discovery.nomad_tls().requests_cert == (str(certs.cert), str(certs.key))
    assert discovery.consul_tls().requests_cert is None


def test_validation_errors_do_not_echo_the_consul_token(tmp_path):
    with pytest.raises(ValueError, match="ca_file") as refused:
        DiscoveryConfig(consul_token="s3cr3t", ca_file=str(tmp_path / "none.pem"))
    assert "s3cr3t" not in str(refused.value)
    assert "input_value" not in str(refused.value)  # pydantic would cut a long token short
