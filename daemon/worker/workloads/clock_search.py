"""Finding the optimal SM clock of a point with fewer measurements than the full grid.

Energy per request against clock is U-shaped: a low clock stretches the work under the GPU's idle
power, a high one pays a voltage that rises with the clock. Latency falls as the clock rises. So the
objective is unimodal over the sorted grid, and a golden-section search over its indices needs about
log(n) / log(1.618) + 2 measurements. ``latency_budget`` b minimises energy among clocks whose latency
is within b x the top clock's: the top clock is measured first, and a clock over the budget scores by
how far over it is, which keeps the objective unimodal (latency is monotone in the clock).

A clock the GPU did not hold (power or thermal capping: its point is flagged) still steers the search by
what it measured, but is never the pick: the pick would be reported as a clock the GPU did not run at.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["OBJECTIVES", "search_clock"]

OBJECTIVES = ("energy", "edp", "latency_budget")
Measure = Callable[[int], tuple[float, float]]  # clock -> (energy per request J, latency s)
_GOLDEN = 0.381966  # 2 - 1.618...: where the first probe of a golden-section search falls


def search_clock(
    clocks: list[int],
    measure: Measure,
    objective: str,
    latency_budget: float | None = None,
    flagged: Callable[[int], bool] = lambda mhz: False,
) -> tuple[int | None, dict[int, tuple[float, float]]]:
    """(the best clock, every clock measured with its (energy, latency)), measuring each clock once.

    The best is the cheapest clock measured that ``flagged`` does not reject; None when it rejects all."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    grid = sorted(set(clocks))
    seen: dict[int, tuple[float, float]] = {}

    def measured(index: int) -> tuple[float, float]:
        if grid[index] not in seen:
            seen[grid[index]] = measure(grid[index])
        return seen[grid[index]]

    limit = None
    if objective == "latency_budget":
        limit = (latency_budget or 1.0) * measured(len(grid) - 1)[1]

    def score(index: int) -> float:
        energy, latency = measured(index)
        if objective == "edp":
            return energy * latency
        if limit is not None and latency > limit:  # over budget: worse the further over, always
            return float("inf") if limit <= 0 else 1e12 * latency / limit
        return energy

    low, high = 0, len(grid) - 1
    while high - low > 2:
        first = low + max(1, round((high - low) * _GOLDEN))
        second = high - max(1, round((high - low) * _GOLDEN))
        if second <= first:
            second = first + 1
        if score(first) <= score(second):
            high = second
        else:
            low = first
    for index in range(low, high + 1):
        score(index)
    # The best of every clock measured: on a noisy U the bracket may have left the lowest one behind.
    usable = [i for i, mhz in enumerate(grid) if mhz in seen and not flagged(mhz)]
    return (grid[min(usable, key=score)] if usable else None), seen
