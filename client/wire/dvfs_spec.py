"""The ``dvfs:`` section of a job spec: clocks for the whole job, or a sweep of SM clocks across its points.

``sm_clocks`` is one clock (locked for the whole job), a list, ``{range: [lo, hi, step]}`` or ``all`` (a
sweep: each point of an llm job runs at each clock, the GPU reset after every point). gpuprofd checks the
values against the GPU's supported clocks (``snap`` takes the nearest instead of refusing) and expands
``all``; it changes clocks only where its configuration allows this user DVFS.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .spec_schema import Section, excerpt, is_number

__all__ = ["DVFS_KEYS", "DvfsParams", "read_dvfs"]

DVFS_KEYS = (
    "sm_clocks", "memory_clock", "power_limit_w", "sm_clock_range", "snap", "order", "cooldown_s", "search",
)  # fmt: skip
ORDERS = ("interleaved", "sequential")
MAX_SWEEP_CLOCKS = 256
MAX_MHZ = 10_000


@dataclass(frozen=True)
class DvfsParams:
    """Clock settings: ``sm_clocks`` one clock for the job; ``sweep`` the SM clocks of a sweep, or
    ``sweep_all`` every supported one; memory clock and power limit hold for the whole job.

    A sweep runs its points in ``order``: ``interleaved`` shuffles (model, task, batch size, clock)
    points with the job's seed, so that drift and heat do not pass for a clock effect; ``cooldown_s``
    idles the GPU before each point.
    """

    sm_clocks: int | None = None
    memory_clock: int | None = None
    power_limit_w: float | None = None
    snap: bool = False
    sweep: tuple[int, ...] = ()
    sweep_all: bool = False
    sm_clock_range: tuple[int, int] | None = None  # a range lock for the whole job: the GPU picks within it
    search: str | None = None  # energy, edp or latency_budget: measure only what finding the optimum needs
    latency_budget: float | None = None
    order: str = "interleaved"
    cooldown_s: float = 0.0

    @property
    def is_sweep(self) -> bool:
        return bool(self.sweep) or self.sweep_all

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        sweep, every = data.pop("sweep"), data.pop("sweep_all")
        if every:
            data["sm_clocks"] = "all"
        elif sweep:
            data["sm_clocks"] = list(sweep)
        if not self.is_sweep:
            data.pop("order")
            data.pop("cooldown_s")
        if self.sm_clock_range is not None:
            data["sm_clock_range"] = list(self.sm_clock_range)
        budget = data.pop("latency_budget")
        if self.search == "latency_budget":
            data["search"] = {"latency_budget": budget}
        return {k: v for k, v in data.items() if v is not None}


def _sweep(section: Section, value: object) -> tuple[int, ...]:
    if isinstance(value, dict):
        ranged = section.section("sm_clocks", ("range",))
        bounds = ranged.data.get("range")
        if not (
            isinstance(bounds, list)
            and len(bounds) == 3
            and all(is_number(b) and math.isfinite(b) and b == int(b) for b in bounds)
        ):
            raise ranged.error("range", f"must be [lowest, highest, step] in MHz, got {excerpt(bounds)}")
        low, high, step = (int(b) for b in bounds)
        if not (0 < low <= high <= MAX_MHZ and step > 0):
            raise ranged.error(
                "range", f"needs 0 < lowest <= highest <= {MAX_MHZ} and step > 0, got {bounds}"
            )
        clocks = tuple(range(low, high + 1, step))
    else:
        clocks = section.integers("sm_clocks", None, 1, MAX_MHZ, MAX_SWEEP_CLOCKS)
    if len(clocks) > MAX_SWEEP_CLOCKS:
        raise section.error("sm_clocks", f"{len(clocks)} clocks; a sweep takes at most {MAX_SWEEP_CLOCKS}")
    return clocks


def _range_lock(section: Section) -> tuple[int, int]:
    value = section.data["sm_clock_range"]
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(is_number(v) and isinstance(v, int) for v in value)
    )
    if not ok or not 0 < value[0] < value[1] <= MAX_MHZ:
        problem = f"must be [lowest, highest] MHz with lowest < highest, got {excerpt(value)}"
        raise section.error("sm_clock_range", problem)
    return int(value[0]), int(value[1])


def _search(section: Section, sweep: bool) -> tuple[str | None, float | None]:
    if not section.has("search"):
        return None, None
    if not sweep:
        raise section.error("search", "searches a sweep's clocks: give sm_clocks as a list, a range or all")
    value = section.data["search"]
    if isinstance(value, dict):
        budget = section.section("search", ("latency_budget",)).number("latency_budget", 1.1, 1.0, 10.0)
        return "latency_budget", budget
    return section.choice("search", None, ("energy", "edp")), None


def read_dvfs(section: Section) -> DvfsParams:
    """Validates the ``dvfs:`` section."""
    given = [key for key in DVFS_KEYS[:4] if section.has(key)]
    if not given:
        wanted = "give sm_clocks, sm_clock_range, memory_clock or power_limit_w"
        raise section.doc.error(section.path, f"changes nothing: {wanted}")
    if section.has("sm_clocks") and section.has("sm_clock_range"):
        raise section.error("sm_clock_range", "give sm_clocks or sm_clock_range, not both")
    value = section.data.get("sm_clocks")
    if section.has("sm_clocks") and value is None:
        raise section.error(
            "sm_clocks", "must be a clock, a list of clocks, {range: [lo, hi, step]} or all, got null"
        )
    single = value is None or (is_number(value) and not isinstance(value, list))
    sweep_all = value == "all"
    if not (single or sweep_all or isinstance(value, (list, dict))):
        problem = f"must be a clock, a list of clocks, {{range: [lo, hi, step]}} or all, got {excerpt(value)}"
        raise section.error("sm_clocks", problem)
    sweep = () if single or sweep_all else _sweep(section, value)
    search, budget = _search(section, bool(sweep) or sweep_all)
    if single:
        for key in ("order", "cooldown_s"):
            if section.has(key):
                raise section.error(key, "applies to a sweep (sm_clocks: a list, a range or all)")
    return DvfsParams(
        sm_clocks=section.integer("sm_clocks", 0, 1, MAX_MHZ) if single and value is not None else None,
        memory_clock=section.integer("memory_clock", 0, 1, 100_000) if section.has("memory_clock") else None,
        power_limit_w=section.number("power_limit_w", 0, 1, 10_000) if section.has("power_limit_w") else None,
        snap=section.boolean("snap", False),
        sweep=sweep,
        sweep_all=sweep_all,
        sm_clock_range=_range_lock(section) if section.has("sm_clock_range") else None,
        search=search,
        latency_budget=budget,
        order=section.choice("order", "interleaved", ORDERS),
        cooldown_s=section.number("cooldown_s", 0.0, 0, 600),
    )
