"""gpuprofd's TOML configuration: every mistake is refused with the file and the key, before serving."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gpuprof.client.wire.errors import ConfigError
from gpuprof.daemon.config import DaemonConfig, load_config


def _load(tmp_path: Path, text: str, **overrides: object) -> DaemonConfig:
    path = tmp_path / "gpuprofd.toml"
    path.write_text(text)
    return load_config(str(path), overrides)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate_hz = 0\n", "rate_hz must be in"),
        ("rate_hz = true\n", "rate_hz must be float, got bool"),
        ("rate_hz = 'fast'\n", "rate_hz must be float, got str"),
        ("rate_hs = 10\n", "unknown key 'rate_hs'"),
        ("gpus = [0, 'one']\n", "gpus must be a list of int"),
        ("admin_groups = 'wheel'\n", "admin_groups must be tuple, got str"),
        ("endpoint = 'tcp://*:5555'\n", "endpoint must start with ipc://"),
        ("tcp_endpoint = 'tcp://*'\n", "tcp_endpoint must be tcp://HOST:PORT"),
        ("users_group = ''\n", "users_group must name a group"),
        ("rate_hz = \n", "gpuprofd.toml"),
    ],
)
def test_a_bad_configuration_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        _load(tmp_path, text)
    assert "gpuprofd.toml" in str(raised.value)


def test_flags_override_the_file_and_integers_are_numbers(tmp_path: Path) -> None:
    config = _load(tmp_path, "rate_hz = 500\nadmin_groups = ['wheel']\n", state_dir="/tmp/x", simulate=None)
    assert config.rate_hz == 500.0 and config.admin_groups == ("wheel",) and config.state_dir == "/tmp/x"
    assert config.simulate is False  # an unset flag leaves the file's (or default) value


def test_remote_clients_are_off_by_default_and_their_live_port_follows_theirs() -> None:
    assert DaemonConfig().tcp_publish_endpoint == ""
    config = DaemonConfig(tcp_endpoint="tcp://*:5555")
    assert config.tcp_publish_endpoint == "tcp://*:5556"
    explicit = DaemonConfig(tcp_endpoint="tcp://*:5555", tcp_pub_endpoint="tcp://*:7000")
    assert explicit.tcp_publish_endpoint == "tcp://*:7000"


def test_a_missing_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "absent.toml"), {})


def test_the_example_configuration_lists_every_key_at_its_default(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parents[2] / "systemd" / "gpuprofd.toml").read_text()
    keys = {field.name for field in dataclasses.fields(DaemonConfig)}
    commented = {
        line[1:].split("=")[0].strip()
        for line in example.splitlines()
        if line.startswith("#") and "=" in line
    }
    assert keys <= commented, keys - commented
    uncommented = "\n".join(
        line[1:] for line in example.splitlines() if line[1:].split("=")[0].strip() in keys
    )
    assert _load(tmp_path, uncommented) == DaemonConfig()
