"""Configuration precedence: defaults < TOML file < environment < flags."""

from pathlib import Path

import pytest

from node.config import NodeConfig, load_config


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
