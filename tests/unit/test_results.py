"""A job's result from hand-made traces: job and window figures, short windows, GPUs kept apart."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from gpuprof.daemon.analysis.results import job_result, plain
from gpuprof.sampler.records import ENERGY_DTYPE, SAMPLE_DTYPE

MS = 1_000_000
T0 = 5_000 * MS  # traces start away from 0, as CLOCK_MONOTONIC does


@dataclass
class Window:
    name: str
    t_start_ns: int
    t_end_ns: int
    attrs: dict[str, object] = field(default_factory=dict)


def steady(power_w: float, seconds: float, gpu: int, clock_mhz: int = 1980) -> tuple[np.ndarray, np.ndarray]:
    """1 kHz samples at ``power_w`` and 10 Hz counter readings of the same power, from T0."""
    n = int(seconds * 1000) + 1
    samples = np.zeros(n, SAMPLE_DTYPE)
    samples["t_ns"] = T0 + np.arange(n, dtype=np.int64) * MS
    samples["power_mw"] = round(power_w * 1000)
    samples["sm_clock_mhz"] = clock_mhz
    samples["gpu"] = gpu
    reads_ms = np.arange(0, int(seconds * 1000) + 1, 100, dtype=np.int64)
    energy = np.zeros(reads_ms.size, ENERGY_DTYPE)
    energy["t_start_ns"] = T0 + reads_ms * MS - 2 * MS
    energy["t_end_ns"] = T0 + reads_ms * MS + 2 * MS
    energy["energy_mj"] = 1_000_000 + np.round(reads_ms * power_w).astype(np.uint64)  # mJ = W * ms
    energy["gpu"] = gpu
    return samples, energy


def merged(*traces: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    samples = np.concatenate([t[0] for t in traces])
    energy = np.concatenate([t[1] for t in traces])
    return samples[np.argsort(samples["t_ns"], kind="stable")], energy


def test_steady_power_gives_matching_counter_and_integral() -> None:
    samples, energy = steady(250.0, 2.0, gpu=0)
    result = job_result(samples, energy, 0, T0, T0 + 2000 * MS, [], simulated=False)
    assert result["energy_integrated_j"] == pytest.approx(500.0)
    assert result["energy_counter_j"] == pytest.approx(500.0)
    assert result["mean_power_w"] == pytest.approx(250.0)
    assert result["peak_power_w"] == pytest.approx(250.0)
    assert result["duration_s"] == pytest.approx(2.0)
    # At steady power only the updates' timing is uncertain: reads 100 ms apart, so up to 50 ms each edge
    # (and the edges lie before the first update and after the last: extended by the power there).
    assert 250.0 * 0.05 < result["energy_counter_uncertainty_j"] < 250.0 * 0.05 * 3
    assert result["sm_clock_min_mhz"] == result["sm_clock_max_mhz"] == 1980
    assert result["power_source"] == "instant"
    assert result["simulated"] is False
    assert result["shorter_than_sensor_update"] is False
    assert "TotalEnergyConsumption" in str(result["energy_counter_method"])
    assert "integrated" in str(result["energy_integrated_method"])
    assert result["windows"] == []


def test_windows_carry_their_own_figures_and_metadata() -> None:
    samples, energy = steady(250.0, 2.0, gpu=0)
    windows = [
        Window("warmup", T0, T0 + 500 * MS, {"step": 0}),
        Window("step", T0 + 500 * MS, T0 + 1500 * MS, {"step": 1, "tokens": (3, 4)}),
    ]
    result = job_result(samples, energy, 0, T0, T0 + 2000 * MS, windows, simulated=True)
    out = result["windows"]
    assert isinstance(out, list) and len(out) == 2
    warmup, step = out
    assert isinstance(warmup, dict) and isinstance(step, dict)
    assert warmup["name"] == "warmup" and warmup["attrs"] == {"step": 0}
    assert step["attrs"] == {"step": 1, "tokens": [3, 4]}
    assert step["t_start_ns"] == T0 + 500 * MS and step["t_end_ns"] == T0 + 1500 * MS
    assert step["energy_integrated_j"] == pytest.approx(250.0)
    assert step["energy_counter_j"] == pytest.approx(250.0)
    assert step["duration_s"] == pytest.approx(1.0)
    assert result["simulated"] is True


def test_a_20_ms_window_is_flagged() -> None:
    samples, energy = steady(250.0, 1.0, gpu=0)
    short = Window("step", T0 + 300 * MS, T0 + 320 * MS)
    result = job_result(samples, energy, 0, T0, T0 + 1000 * MS, [short], simulated=False)
    (window,) = result["windows"]
    assert window["shorter_than_sensor_update"] is True
    assert window["duration_s"] == pytest.approx(0.02)
    # Inside one update period: the period's energy split by time (the readings cannot place it), flagged.
    assert window["energy_counter_j"] == pytest.approx(250.0 * 0.02, rel=0.01)
    assert result["shorter_than_sensor_update"] is False


def test_windows_keep_gpus_apart() -> None:
    samples, energy = merged(steady(100.0, 1.0, gpu=0, clock_mhz=345), steady(400.0, 1.0, gpu=1))
    window = Window("all", T0, T0 + 1000 * MS)
    result = job_result(samples, energy, 1, T0, T0 + 1000 * MS, [window], simulated=False)
    (figures,) = result["windows"]
    for figures_of in (result, figures):
        assert figures_of["mean_power_w"] == pytest.approx(400.0)
        assert figures_of["energy_counter_j"] == pytest.approx(400.0)
        assert figures_of["sm_clock_min_mhz"] == 1980
    assert result["gpu"] == 1


def test_clock_event_reasons_are_named() -> None:
    samples, energy = steady(700.0, 1.0, gpu=0)
    samples["clock_event_reasons"][500:] = 0x4
    result = job_result(samples, energy, 0, T0, T0 + 1000 * MS, [], simulated=False)
    assert result["clock_event_reasons"] == ["sw_power_cap"]


def test_result_is_plain_json_even_without_samples() -> None:
    empty_samples, empty_energy = np.zeros(0, SAMPLE_DTYPE), np.zeros(0, ENERGY_DTYPE)
    result = job_result(empty_samples, empty_energy, 0, T0, T0 + MS, [Window("w", T0, T0)], simulated=True)
    assert result["energy_integrated_j"] is None and result["mean_power_w"] is None
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_every_value_is_a_builtin_type() -> None:
    samples, energy = steady(250.0, 1.0, gpu=0)
    windows = [Window("w", T0, T0 + 500 * MS, {"n": np.int64(3), "x": np.float32(0.5)})]
    result = job_result(samples, energy, 0, T0, T0 + 1000 * MS, windows, simulated=False)

    def check(value: object) -> None:
        assert type(value) in (str, int, float, bool, type(None), list, dict), (value, type(value))
        if isinstance(value, dict):
            for key, item in value.items():
                assert type(key) is str
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)

    check(result)


def test_an_inverted_window_is_kept_without_figures_and_the_job_still_gets_its_result() -> None:
    samples, energy = steady(250.0, 1.0, gpu=0)
    result = job_result(samples, energy, 0, T0, T0 + 1000 * MS, [Window("backwards", T0 + 10, T0)], False)
    (window,) = result["windows"]
    assert window["name"] == "backwards" and window["problem"] == "ends before it begins: no figures"
    assert "energy_counter_j" not in window and result["energy_counter_j"] > 0


def test_plain_turns_non_finite_floats_into_none_and_refuses_objects() -> None:
    assert plain({"a": float("nan"), "b": (1, np.inf)}) == {"a": None, "b": [1, None]}
    with pytest.raises(TypeError, match=r"attrs\.x"):
        plain({"x": object()}, "attrs")
