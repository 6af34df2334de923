"""Fixtures shared by every test: an isolated simulated GPU and a guard against leaked sampler threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuprof.sampler import backend


@pytest.fixture(autouse=True)
def isolated_sim_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give each test its own simulated-GPU state file, so tests never see each other's GPU."""
    state = tmp_path / "sim.state"
    monkeypatch.setenv("GPUPROF_SIM_STATE", str(state))
    monkeypatch.delenv("GPUPROF_NVML_LIBRARY", raising=False)
    return state


@pytest.fixture(autouse=True)
def no_sampler_left_running() -> Iterator[None]:
    """Fail any test that leaves a sampler's threads running."""
    yield
    leaked = backend.running_samplers()
    for sampler in leaked:
        sampler.stop()  # type: ignore[attr-defined]
    assert not leaked, f"test left {len(leaked)} sampler(s) running"
