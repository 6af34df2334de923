"""Fixtures shared by every test: an isolated simulated GPU and a guard against leaked sampler threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from gpuprof.sampler import backend
from gpuprof.sampler.energy import FusedEnergy


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


@pytest.fixture
def fused_driver_power(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[np.ndarray | None]]:
    """``record(*modules)``: each FusedEnergy those modules build from then on records the driver power it is
    given, in order, in the list returned."""

    def record(*modules: ModuleType) -> list[np.ndarray | None]:
        seen: list[np.ndarray | None] = []

        class Recorded(FusedEnergy):
            def __init__(
                self,
                samples: np.ndarray,
                energy: np.ndarray,
                gpu: int,
                driver_power: np.ndarray | None = None,
            ) -> None:
                seen.append(driver_power)
                super().__init__(samples, energy, gpu, driver_power)

        for module in modules:
            monkeypatch.setattr(module, "FusedEnergy", Recorded)
        return seen

    return record
