"""The optimal-clock search: the grid optimum found with a third of the grid's measurements or fewer."""

from __future__ import annotations

import pytest

from gpuprof.daemon.worker.workloads.clock_search import search_clock

GRID = list(range(345, 1981, 45))  # 37 clocks


def u_shaped(optimum: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def measure(mhz: int) -> tuple[float, float]:
        calls.append(mhz)
        latency = 2000.0 / mhz
        return 10.0 + ((mhz - optimum) / 300.0) ** 2, latency

    return calls, measure


@pytest.mark.parametrize("optimum", [345, 700, 1110, 1500, 1980])
def test_energy_search_finds_the_grid_optimum_with_a_third_of_the_points(optimum: int) -> None:
    calls, measure = u_shaped(optimum)
    best, seen = search_clock(GRID, measure, "energy")  # type: ignore[arg-type]
    grid_best = min(GRID, key=lambda c: abs(c - optimum))
    assert best == grid_best
    assert len(calls) == len(set(calls)) == len(seen) <= len(GRID) // 3


def test_edp_and_latency_budget_move_the_optimum_up() -> None:
    _, measure = u_shaped(900)
    energy_best, _ = search_clock(GRID, measure, "energy")  # type: ignore[arg-type]
    edp_best, _ = search_clock(GRID, measure, "edp")  # type: ignore[arg-type]
    assert energy_best == 885 and edp_best > energy_best  # latency weighs in: a faster clock
    budget_best, seen = search_clock(GRID, measure, "latency_budget", 1.5)  # type: ignore[arg-type]
    top_latency = 2000.0 / 1980
    assert seen[budget_best][1] <= 1.5 * top_latency and budget_best == min(
        c for c in GRID if 2000.0 / c <= 1.5 * top_latency
    )  # the U's optimum is too slow: the slowest clock within budget is the cheapest


def test_the_pick_is_the_cheapest_clock_measured_even_when_noise_bent_the_bracket_away() -> None:
    _, smooth = u_shaped(1110)
    first_probe = GRID[round((len(GRID) - 1) * 0.381966)]  # where a golden-section search looks first

    def noisy(mhz: int) -> tuple[float, float]:
        energy, latency = smooth(mhz)  # type: ignore[operator]
        return (energy - 1.0 if mhz == first_probe else energy + 0.5), latency  # one lucky reading

    best, seen = search_clock(GRID, noisy, "energy")  # type: ignore[arg-type]
    assert first_probe in seen and best == min(seen, key=lambda mhz: seen[mhz][0])


def test_a_clock_the_gpu_did_not_hold_is_never_the_pick() -> None:
    _, measure = u_shaped(1800)  # the U's bottom lies among clocks a power cap holds down
    capped = {mhz for mhz in GRID if mhz > 1725}
    best, seen = search_clock(GRID, measure, "energy", flagged=capped.__contains__)  # type: ignore[arg-type]
    assert capped & set(seen)  # they steered the search...
    assert best == max(mhz for mhz in seen if mhz not in capped)  # ...but the pick is one the GPU held
    nothing, _ = search_clock(GRID, measure, "energy", flagged=lambda mhz: True)  # type: ignore[arg-type]
    assert nothing is None
