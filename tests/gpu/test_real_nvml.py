"""Both samplers against the real NVIDIA driver (read-only: no GPU setting is ever changed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from gpuprof.client.cli import main
from gpuprof.sampler import BACKENDS, SamplerConfig, open_sampler
from gpuprof.sampler.energy import energy_window
from gpuprof.sampler.library import driver_available, resolve

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not driver_available(), reason="no NVIDIA driver (libnvidia-ml.so.1) on this machine"),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampler_reads_plausible_values_from_the_driver(backend: str) -> None:
    library = resolve()
    assert not library.simulated
    sampler = open_sampler(SamplerConfig(rate_hz=1000), library, backend=backend)
    try:
        with sampler:
            time.sleep(1.2)
        samples, energy = sampler.drain()
        stats = sampler.stats()
    finally:
        sampler.close()
    assert stats.errors == {0: {}}
    assert stats.power_source == {0: "instant"}
    assert np.all(samples["missing"] == 0)
    power_w = samples["power_mw"] / 1000
    assert 20 < power_w.mean() < 1500
    assert np.all(samples["sm_clock_mhz"] > 0) and np.all(samples["mem_clock_mhz"] > 0)
    window = energy_window(samples, energy, gpu=0)
    assert window.distinct_power_updates >= 5  # ~100 ms sensor updates
    assert window.energy_counter_j is not None and window.energy_counter_j > 0
    assert np.all(np.diff(energy["energy_mj"].astype(np.int64)) >= 0)


def test_cli_sample_on_the_driver_is_not_labelled_simulated(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["sample", "--seconds", "1", "-o", str(tmp_path / "t.parquet"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["simulated"] is False
    assert summary["gpus"][0]["energy_counter_j"] > 0
