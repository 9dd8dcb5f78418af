"""The config file is validated at start and every error names the key and its source."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.tls import make_ca
from loguru import logger

from pipecat_app.cli import main
from pipecat_app.config import (
    DEMO_CONFIG,
    ConfigError,
    OpenAISTTConfig,
    PiperTTSConfig,
    WhisperSTTConfig,
    load_config,
)

CLUSTER_EXAMPLE = DEMO_CONFIG.with_name("cluster.toml.example")


@contextmanager
def warnings_logged() -> Iterator[list[str]]:
    """The WARNING messages this process logs while the block runs."""
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        yield messages
    finally:
        logger.remove(sink)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.toml"
    path.write_text(text)
    return path


def test_demo_config_loads_with_the_bundled_offline_models():
    config = load_config(DEMO_CONFIG, environ={})
    assert isinstance(config.stt, WhisperSTTConfig)
    assert (config.stt.resolved_model_dir() / "model.bin").is_file()
    assert isinstance(config.tts, PiperTTSConfig)
    assert (config.tts.resolved_voice_dir() / "en_US-joe-medium.onnx").is_file()
    assert config.twin.discovery.mode == "static"
    assert [e.base_url for e in config.twin.experts] == ["http://127.0.0.1:8080/v1"]
    # Memory lives under the user's cache, never in the repository.
    assert not config.twin.memory.path.is_relative_to(DEMO_CONFIG.parents[3])
    assert Path(config.twin.prompt.file).is_file()


def test_cluster_example_loads_with_openai_compatible_speech_and_consul():
    config = load_config(CLUSTER_EXAMPLE, environ={})
    assert isinstance(config.stt, OpenAISTTConfig)
    assert config.stt.base_url.endswith("/v1")
    assert config.tts.provider == "openai"
    assert config.twin.discovery.mode == "consul"
    assert config.twin.prompt.consul_key == "twin/prompts/system"


def test_unknown_key_is_named_with_its_section_and_file(tmp_path):
    path = write(tmp_path, '[server]\nprot = 8000\n[twin]\nuser_id = "a"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "server.prot: unknown key" in str(err.value)
    assert str(path) in str(err.value)


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, '[server]\nport = "eighty"\n')
    with pytest.raises(ConfigError, match=r"server\.port: Input should be a valid integer"):
        load_config(path, environ={})


def test_out_of_range_value_names_the_key(tmp_path):
    path = write(tmp_path, "[vad]\nconfidence = 1.5\n")
    with pytest.raises(ConfigError, match=r"vad\.confidence: Input should be less than or equal"):
        load_config(path, environ={})


def test_unknown_provider_names_the_choices(tmp_path):
    path = write(tmp_path, '[stt]\nprovider = "deepgram"\n')
    with pytest.raises(ConfigError, match=r"stt: .*'whisper', 'openai'"):
        load_config(path, environ={})


def test_openai_stt_without_base_url_is_a_missing_key(tmp_path):
    path = write(tmp_path, '[stt]\nprovider = "openai"\n')
    with pytest.raises(ConfigError, match=r"stt\.base_url: required key is missing"):
        load_config(path, environ={})


def test_twin_errors_come_through_with_their_twin_key(tmp_path):
    path = write(tmp_path, '[twin.discovery]\nmode = "etcd"\n')
    with pytest.raises(ConfigError, match=r"twin\.discovery\.mode: Input should be"):
        load_config(path, environ={})


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[server\nport = 1\n")
    with pytest.raises(ConfigError, match=r"app\.toml is not valid TOML"):
        load_config(path, environ={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_missing_local_voice_is_caught_at_start_not_downloaded(tmp_path):
    path = write(tmp_path, f'[tts]\nprovider = "piper"\nvoice_dir = "{tmp_path}"\n')
    with pytest.raises(ConfigError, match=r"tts\.voice: .*en_US-joe-medium\.onnx"):
        load_config(path, environ={})


def test_environment_overrides_nested_keys_with_typed_values(tmp_path):
    path = write(tmp_path, "[server]\nport = 7000\n")
    config = load_config(
        path,
        environ={
            "TWIN_APP__SERVER__PORT": "9001",
            "TWIN_APP__LOG__JSON_LINES": "true",
            "TWIN_APP__TWIN__MEMORY__PATH": "/data/m.sqlite3",
            "TWIN_APP__TWIN__ROUTING__THRESHOLD": "0.5",
            "UNRELATED": "x",
        },
    )
    assert config.server.port == 9001
    assert config.log.json_lines is True
    assert config.twin.memory.path == Path("/data/m.sqlite3")
    assert config.twin.routing.threshold == 0.5


def test_bad_environment_override_names_the_variable(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"server\.port: .* \(set by TWIN_APP__SERVER__PORT\)"):
        load_config(path, environ={"TWIN_APP__SERVER__PORT": "high"})


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = write(tmp_path, '[twin.memory]\npath = "state/memory.sqlite3"\n')
    config = load_config(path, environ={})
    assert config.twin.memory.path == tmp_path / "state" / "memory.sqlite3"


def test_check_command_exits_2_and_prints_the_error(tmp_path, capsys):
    path = write(tmp_path, "[server]\nport = 0\n")
    assert main(["check", "--config", str(path)]) == 2
    assert "server.port" in capsys.readouterr().err


def test_check_command_hides_secrets(tmp_path, capsys):
    path = write(
        tmp_path, '[stt]\nprovider = "openai"\nbase_url = "http://s/v1"\napi_key = "sekrit"\n'
    )
    assert main(["check", "--config", str(path)]) == 0
    assert "sekrit" not in capsys.readouterr().out


def test_whisper_defaults_are_the_fast_settings():
    config = load_config(DEMO_CONFIG, environ={})
    assert isinstance(config.stt, WhisperSTTConfig)
    stt = config.stt
    assert (stt.window, stt.fit_min_s, stt.compute_type, stt.beam_size) == ("fit", 10, "int8", 5)
    assert not stt.timestamps
    assert not stt.temperature_fallback
    assert not stt.condition_on_previous_text
    assert stt.warm_up
    # 0 threads means one per CPU this process may use, not CTranslate2's fixed 4.
    assert stt.cpu_threads == 0
    assert stt.resolved_cpu_threads() == len(os.sched_getaffinity(0))


def test_whisper_settings_come_from_the_file_and_the_environment(tmp_path):
    path = write(
        tmp_path,
        '[stt]\nprovider = "whisper"\nbeam_size = 5\ntimestamps = true\ncpu_threads = 3\n',
    )
    environ = {"TWIN_APP__STT__WARM_UP": "false", "TWIN_APP__STT__WINDOW": "full"}
    config = load_config(path, environ=environ)
    assert isinstance(config.stt, WhisperSTTConfig)
    assert (config.stt.beam_size, config.stt.timestamps, config.stt.warm_up) == (5, True, False)
    assert config.stt.window == "full"
    assert config.stt.resolved_cpu_threads() == 3


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("beam_size = 0", r"stt\.beam_size: Input should be greater than or equal to 1"),
        ("beam_size = 1.5", r"stt\.beam_size: Input should be a valid integer"),
        ("cpu_threads = -1", r"stt\.cpu_threads: Input should be greater than or equal to 0"),
        ('compute_type = "int4"', r"stt\.compute_type: Input should be 'default', .*'int8'"),
        ("timestamps = 2", r"stt\.timestamps: Input should be a valid boolean"),
        ('warm_up = "soon"', r"stt\.warm_up: Input should be a valid boolean"),
        ("fit_min_s = 3", r"stt\.fit_min_s: Input should be greater than or equal to 5"),
        ('window = "half"', r"stt\.window: Input should be 'fit' or 'full'"),
        ("temperature_fallback = true", r"stt: .*temperature_fallback needs window 'full'"),
        ('compute_type = "float16"', r"stt: .*'float16' needs a GPU; on device 'cpu' use 'int8'"),
        ('device = "cuda"\ncpu_threads = 2', r"stt: .*cpu_threads only applies to device 'cpu'"),
    ],
)
def test_bad_whisper_settings_name_the_key_and_the_fix(tmp_path, setting, error):
    path = write(tmp_path, f'[stt]\nprovider = "whisper"\n{setting}\n')
    with pytest.raises(ConfigError, match=error):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("stop_secs = -0.1", r"vad\.stop_secs: Input should be greater than or equal to 0"),
        ("stop_secs = 0.1", r"vad: .*stop_secs 0\.1 .*at least 0\.2 \(0\.4, the default"),
    ],
)
def test_bad_vad_stop_secs_names_the_key_and_the_fix(tmp_path, setting, error):
    path = write(tmp_path, f"[vad]\n{setting}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(path, environ={})


def test_server_limits_default_to_four_voice_and_sixteen_text_sessions():
    server = load_config(DEMO_CONFIG, environ={}).server
    assert (server.max_sessions, server.max_text_sessions) == (4, 16)
    assert server.text_idle_s == 300
    assert server.voice_connect_timeout_s == 30
    assert server.max_body_bytes == 65536


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("max_text_sessions = 0", r"server\.max_text_sessions: Input should be greater than or"),
        ("text_idle_s = 0", r"server\.text_idle_s: Input should be greater than 0"),
        ("voice_connect_timeout_s = -1", r"server\.voice_connect_timeout_s: Input should be"),
        ("max_body_bytes = 1000", r"server\.max_body_bytes: Input should be greater than or"),
    ],
)
def test_bad_server_limits_name_the_key(tmp_path, setting, error):
    path = write(tmp_path, f"[server]\n{setting}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(path, environ={})


def test_access_and_tls_are_off_by_default_and_metrics_local():
    server = load_config(DEMO_CONFIG, environ={}).server
    assert server.access_token.get_secret_value() == ""
    assert (server.tls_cert_file, server.tls_key_file, server.tls) == (None, None, False)
    assert server.metrics_access == "local"


def test_tls_files_are_relative_to_the_config_file_and_must_be_a_pair(tmp_path):
    certs = make_ca(tmp_path)
    path = write(
        tmp_path, '[server]\ntls_cert_file = "server.pem"\ntls_key_file = "server-key.pem"\n'
    )
    server = load_config(path, environ={}).server
    assert (server.tls_cert_file, server.tls_key_file) == (certs.cert, certs.key)
    assert server.tls


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        (
            'tls_cert_file = "server.pem"',
            r"server: .*tls_cert_file is set but tls_key_file is not: set both for HTTPS",
        ),
        (
            'tls_key_file = "server-key.pem"',
            r"server: .*tls_key_file is set but tls_cert_file is not",
        ),
        (
            'tls_cert_file = "nope.pem"\ntls_key_file = "server-key.pem"',
            r"server\.tls_cert_file: .*nope\.pem cannot be read \(No such file",
        ),
        (
            'tls_cert_file = "server.pem"\ntls_key_file = "."',
            r"server\.tls_key_file: .* cannot be read \(Is a directory",
        ),
        (
            'tls_cert_file = "server.pem"\ntls_key_file = "other-key.pem"',
            r"server\.tls_cert_file, server\.tls_key_file: .* are not a PEM certificate and its",
        ),
        (
            'tls_cert_file = "ca.pem"\ntls_key_file = "server-key.pem"',
            r"are not a PEM certificate and its key",
        ),
        ('metrics_access = "token"', r"server: .*metrics_access 'token' needs an access_token"),
        ('metrics_access = "public"', r"server\.metrics_access: Input should be 'local', 'open'"),
        ('access_token = " padded "', r"server: .*access_token starts or ends with white space"),
    ],
    ids=[
        "cert-only",
        "key-only",
        "missing-cert",
        "key-is-a-directory",
        "another-key",
        "ca-with-the-leaf-key",
        "metrics-token-without-token",
        "metrics-unknown",
        "padded-token",
    ],
)
def test_bad_tls_and_access_settings_name_the_key_and_the_fix(tmp_path, setting, error):
    make_ca(tmp_path)
    (tmp_path / "other").mkdir()
    make_ca(tmp_path / "other").key.rename(tmp_path / "other-key.pem")
    path = write(tmp_path, f"[server]\n{setting}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        ("0123", "0123"),
        ("1e5", "1e5"),
        ("true", "true"),
        ('"quoted"', "quoted"),
        ("a-b_c", "a-b_c"),
    ],
)
def test_the_access_token_from_the_environment_is_taken_as_written(tmp_path, raw, token):
    config = load_config(write(tmp_path, ""), environ={"TWIN_APP__SERVER__ACCESS_TOKEN": raw})
    assert config.server.access_token.get_secret_value() == token


def test_check_command_hides_the_access_token(tmp_path, capsys):
    path = write(tmp_path, '[server]\naccess_token = "sekrit-token"\n')
    assert main(["check", "--config", str(path)]) == 0
    assert "sekrit-token" not in capsys.readouterr().out


def test_the_vision_token_from_the_environment_is_taken_as_written_and_never_shown(
    tmp_path, capsys
):
    path = write(tmp_path, "")
    environ = {"TWIN_APP__TWIN__TOOLS__VISION_TOKEN": "1e5"}
    config = load_config(path, environ=environ)
    assert config.twin.tools.vision_token.get_secret_value() == "1e5"
    assert "1e5" not in repr(config.twin.tools)
    path = write(tmp_path, '[twin.tools]\nvision_token = "sekrit-vision"\n')
    assert main(["check", "--config", str(path)]) == 0
    assert "sekrit-vision" not in capsys.readouterr().out


def test_a_vision_token_a_header_cannot_carry_names_the_key_and_hides_the_token(tmp_path):
    path = write(tmp_path, '[twin.tools]\nvision_token = "sekrit vision\\n"\n')
    with pytest.raises(ConfigError, match=r"twin\.tools\.vision_token holds white space") as err:
        load_config(path, environ={})
    assert "sekrit" not in str(err.value)


@pytest.mark.parametrize("url", ["ftp://vision:8090", "vision:8090", "http:///describe"])
def test_a_vision_url_that_is_not_http_names_the_key(tmp_path, url):
    path = write(tmp_path, f'[twin.tools]\nvision_url = "{url}"\n')
    with pytest.raises(ConfigError, match=r"twin\.tools\.vision_url .* is not an http\(s\) URL"):
        load_config(path, environ={})


def test_the_discovery_ca_and_client_certificate_are_relative_to_the_config_file(tmp_path):
    certs = make_ca(tmp_path)
    path = write(
        tmp_path,
        f'[twin.discovery]\nca_file = "{certs.ca.name}"\n'
        f'client_cert_file = "{certs.cert.name}"\nclient_key_file = "{certs.key.name}"\n',
    )
    discovery = load_config(path, environ={}).twin.discovery
    assert (discovery.ca_file, discovery.client_cert_file, discovery.client_key_file) == (
        str(certs.ca),
        str(certs.cert),
        str(certs.key),
    )


def test_an_empty_config_file_starts_with_a_warning_that_names_it(tmp_path):
    path = write(tmp_path, "")
    with warnings_logged() as warnings:
        config = load_config(path, environ={})
    assert config.server.port == 7860
    assert any(str(path) in w and "every value is a default" in w for w in warnings), warnings


def test_a_config_file_with_settings_gives_no_empty_file_warning(tmp_path):
    path = write(tmp_path, "[server]\nport = 9000\n")
    with warnings_logged() as warnings:
        load_config(path, environ={})
    assert not [w for w in warnings if "is empty" in w], warnings
