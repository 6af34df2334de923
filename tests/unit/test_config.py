"""Sampler configuration: every bad value is refused with a message that names it."""

from __future__ import annotations

import numpy as np
import pytest

from gpuprof.client.wire.errors import UsageError
from gpuprof.sampler.backend import SamplerConfig, jitter_percentiles
from gpuprof.sampler.records import JITTER_BINS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_hz": 0}, "sampling rate"),
        ({"rate_hz": -5}, "sampling rate"),
        ({"rate_hz": 1e9}, "sampling rate"),
        ({"rate_hz": float("nan")}, "sampling rate"),
        ({"energy_rate_hz": 5000}, "energy-counter rate"),
        ({"gpus": ()}, "no GPU"),
        ({"gpus": (0, 0)}, "repeat"),
        ({"gpus": (-1,)}, ">= 0"),
        ({"buffer_seconds": 0}, "buffer"),
        ({"spin_us": 5000}, "spin"),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SamplerConfig(**kwargs)  # type: ignore[arg-type]


def test_capacity_scales_with_rate_and_gpus() -> None:
    config = SamplerConfig(gpus=(0, 1), rate_hz=10_000, buffer_seconds=2)
    assert config.sample_capacity == 40_000
    assert config.period_ns == 100_000


def test_jitter_percentiles_from_histogram() -> None:
    histogram = np.zeros(JITTER_BINS, dtype=np.uint64)
    histogram[3] = 98
    histogram[40] = 1
    histogram[JITTER_BINS - 1] = 1
    p50, p99, top = jitter_percentiles(histogram)
    assert p50 == 3 and p99 == 40 and top == float("inf")
    assert jitter_percentiles(np.zeros(JITTER_BINS, dtype=np.uint64)) == (None, None, None)
