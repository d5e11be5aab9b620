"""Configuration precedence: defaults < TOML file < environment < flags."""

from pathlib import Path

import pytest

from node.config import OTHER_ENV, ConfigError, NodeConfig, load_config


def test_defaults_need_nothing() -> None:
    config = load_config(env={})
    assert config == NodeConfig()
    assert (config.host, config.port, config.block_time_ms) == ("127.0.0.1", 8080, 250)


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text('port = 9000\nblock_time_ms = 100\nhost = "127.0.0.2"\n')
    env = {"FEDROLLUP_BLOCK_TIME_MS": "75", "FEDROLLUP_PORT": "9100", "UNRELATED": "x"}
    config = load_config(toml, env=env, flags={"port": 9200, "data_dir": None})
    assert config.host == "127.0.0.2"  # file
    assert config.block_time_ms == 75  # env beats file
    assert config.port == 9200  # flag beats env
    assert config.data_dir == Path(".fedrollup")  # a None flag is "not given"


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(toml, env={})
    with pytest.raises(ValueError, match="integer"):
        load_config(env={"FEDROLLUP_PORT": "eighty"})
    with pytest.raises(ValueError, match="port"):
        load_config(env={}, flags={"port": 70000})


def test_unknown_environment_variables_are_errors() -> None:
    with pytest.raises(ConfigError, match="FEDROLLUP_PROT"):
        load_config(env={"FEDROLLUP_PROT": "9000"})
    with pytest.raises(ConfigError, match="FEDROLLUP_port"):  # the name is upper case
        load_config(env={"FEDROLLUP_port": "9000"})
    # variables of the CLI, the key files and the tests are not settings, and not errors
    other = {name: "x" for name in OTHER_ENV}
    assert load_config(env={**other, "FEDROLLUP_PORT": "9001"}).port == 9001


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True),
     ("false", False), ("0", False), ("No", False), ("off", False)],
)  # fmt: skip
def test_booleans(raw: str, value: bool) -> None:
    assert load_config(env={"FEDROLLUP_KEEPER": raw}).keeper is value


def test_malformed_boolean_is_an_error_not_false(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keeper: expected a boolean"):
        load_config(env={"FEDROLLUP_KEEPER": "ture"})
    with pytest.raises(ConfigError, match="keeper: expected a boolean"):
        load_config(env={"FEDROLLUP_KEEPER": ""})
    toml = tmp_path / "node.toml"
    toml.write_text("keeper = false\n")
    assert load_config(toml, env={}).keeper is False
    toml.write_text('keeper = "maybe"\n')
    with pytest.raises(ConfigError, match="boolean"):
        load_config(toml, env={})


def test_log_settings() -> None:
    config = load_config(env={"FEDROLLUP_LOG_LEVEL": "debug", "FEDROLLUP_LOG_FORMAT": "json"})
    assert (config.log_level, config.log_format) == ("DEBUG", "json")
    with pytest.raises(ConfigError, match="log_level"):
        load_config(env={"FEDROLLUP_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="log_format"):
        load_config(env={"FEDROLLUP_LOG_FORMAT": "xml"})
