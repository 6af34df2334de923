"""Simulated-GPU configs from JSON: the documented example loads; every mistake is named by file and key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpuprof.client.wire.errors import ConfigError
from gpuprof.sampler.sim import GpuSpec, SimConfig, SimulatedNvml, load_config

DOC = Path(__file__).parents[2] / "docs" / "simulated-gpu.md"


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(data))
    return path


def test_the_documented_example_loads_and_configures(tmp_path: Path) -> None:
    example = re.search(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert example, "docs/simulated-gpu.md lost its example config"
    path = tmp_path / "example.json"
    path.write_text(example.group(1))
    config = load_config(path)
    assert config.gpu_count == 2 and config.allow_unprivileged_control
    assert config.gpus[1].instant_power_supported is False and config.gpus[0].instant_power_supported
    sim = SimulatedNvml()
    sim.configure(config)
    assert [g.power_limit_w for g in sim.status()] == [g.power_limit_w or 700 for g in config.gpus]


def test_shared_settings_apply_to_every_gpu_and_overrides_to_one(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, {"gpu_count": 3, "gpu": {"idle_power_w": 60}, "gpus": [{}, {"idle_power_w": 90}]})
    )
    assert [g.idle_power_w for g in config.gpus] == [60, 90, 60]
    assert config.gpus[0] == GpuSpec(idle_power_w=60)
    assert load_config(write(tmp_path, {})) == SimConfig()
    assert load_config(write(tmp_path, {"gpus": [{}, {}]})).gpu_count == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gpu_cont": 2}, r"sim\.json: gpu_cont: unknown key \(did you mean 'gpu_count'\?\)"),
        (
            {"gpu": {"idle_power": 1}},
            r"sim\.json: gpu\.idle_power: unknown key \(did you mean 'idle_power_w'\?\)",
        ),
        ({"gpus": [{}, {"idle_power_w": "high"}]}, r"gpus\[1\]\.idle_power_w: must be a number, got 'high'"),
        ({"gpu": {"idle_power_w": True}}, r"gpu\.idle_power_w: must be a number"),
        ({"gpu": {"max_graphics_clock_mhz": 1980.5}}, r"gpu\.max_graphics_clock_mhz: must be an integer"),
        ({"gpu": {"memory_clocks_mhz": [2619, "x"]}}, r"gpu\.memory_clocks_mhz: must be a list of integers"),
        ({"gpu": {"memory_clocks_mhz": [2619, 2619]}}, r"gpu\.memory_clocks_mhz: must list 1 to 8 distinct"),
        ({"gpu": {"ripple_fraction": 2}}, r"gpu\.ripple_fraction: must be in \[0, 0\.5\], got 2\.0"),
        ({"gpu": {"name": None}}, r"gpu\.name: must not be null"),
        ({"gpus": [{"power_limit_w": 800}]}, r"gpus\[0\]\.power_limit_w: must be within"),
        ({"gpu": {"min_power_limit_w": 300}, "gpus": [{"max_power_limit_w": 250}]}, r"gpus\[0\]\.max_power"),
        ({"gpu": {"graphics_clock_step_mhz": 7}}, r"gpu\.graphics_clock_step_mhz: must divide"),
        ({"gpu_count": 17}, r"gpu_count: must be an integer in \[1, 16\]"),
        ({"gpu_count": 1, "gpus": [{}, {}]}, r"gpus: lists 2 GPUs but gpu_count is 1"),
        ({"allow_unprivileged_control": "yes"}, r"allow_unprivileged_control: must be true or false"),
        ({"gpus": {"0": {}}}, r"gpus: must be a list"),
        ([], r"sim\.json: must be a JSON object"),
    ],
)
def test_mistakes_are_named_by_file_and_key(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, data))


def test_unreadable_or_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.json: cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "gpu_count": 2,\n}\n')
    with pytest.raises(ConfigError, match=r"bad\.json: line 3: invalid JSON"):
        load_config(bad)


def test_specs_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="ripple_period_ms"):
        GpuSpec(ripple_period_ms=float("nan"))
    with pytest.raises(ConfigError, match="gpu_count"):
        SimConfig(gpus=())
