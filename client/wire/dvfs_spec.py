"""The ``dvfs:`` section of a job spec: clocks for the whole job, or a sweep of SM clocks across its points.

``sm_clocks`` is one clock (locked for the whole job), a list, ``{range: [lo, hi, step]}`` or ``all`` (a
sweep: each point of an llm job runs at each clock, the GPU reset after every point). gpuprofd checks the
values against the GPU's supported clocks (``snap`` takes the nearest instead of refusing) and expands
``all``; it changes clocks only where its configuration allows this user DVFS.

``phase_clocks`` asks an llm job for (prefill clock, decode clock) pairs: each pair is a point of every
model x task x batch size, whose requests run prefill at the one and decode at the other, the lock switched
at each phase edge (docs/llm.md, "Phase-aware clocks"). It may join a sweep of ``sm_clocks``, whose points
are then the single clocks the pairs are compared against.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .spec_schema import Section, excerpt, is_number

__all__ = ["DVFS_KEYS", "DvfsParams", "read_dvfs"]

DVFS_KEYS = (
    "sm_clocks", "memory_clock", "power_limit_w", "sm_clock_range", "phase_clocks", "snap", "order",
    "cooldown_s", "search",
)  # fmt: skip
CHANGES = DVFS_KEYS[:5]  # a dvfs section gives at least one of these
PHASE_KEYS = ("pairs", "prefill", "decode", "latency_budget")
MAX_PHASE_PAIRS = 256
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
    phase_pairs: tuple[tuple[int, int], ...] = ()  # (prefill, decode) SM clocks, switched at phase edges
    phase_latency_budget: float = 1.1  # the pairs' optimum within this factor of the top clock's latency

    @property
    def is_sweep(self) -> bool:
        return bool(self.sweep) or self.sweep_all or bool(self.phase_pairs)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        sweep, every = data.pop("sweep"), data.pop("sweep_all")
        if every:
            data["sm_clocks"] = "all"
        elif sweep:
            data["sm_clocks"] = list(sweep)
        pairs, budget_factor = data.pop("phase_pairs"), data.pop("phase_latency_budget")
        if pairs:
            data["phase_clocks"] = {"pairs": [list(pair) for pair in pairs], "latency_budget": budget_factor}
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
            and all(
                is_number(b) and (isinstance(b, int) or (math.isfinite(b) and b == int(b))) for b in bounds
            )
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


def _phase_pairs(section: Section) -> tuple[tuple[tuple[int, int], ...], float]:
    """The (prefill, decode) clock pairs of ``phase_clocks``: listed as ``pairs``, or every ``prefill`` clock
    with every ``decode`` clock; and the latency budget their optimum is chosen within."""
    value = section.data["phase_clocks"]
    if not isinstance(value, dict):
        problem = f"must be a mapping with pairs, or prefill and decode, got {excerpt(value)}"
        raise section.error("phase_clocks", problem)
    phases = section.section("phase_clocks", PHASE_KEYS)
    crossed = phases.has("prefill") or phases.has("decode")
    if phases.has("pairs") == crossed:
        raise section.error(
            "phase_clocks", "give pairs: [[prefill, decode], ...], or prefill and decode lists"
        )
    pairs: list[tuple[int, int]] = []
    if crossed:
        for key in ("prefill", "decode"):
            if not phases.has(key):
                raise phases.error(
                    key, "required with the other phase's clocks (every pair of the two lists)"
                )
        prefill, decode = (
            phases.integers(key, None, 1, MAX_MHZ, MAX_PHASE_PAIRS) for key in ("prefill", "decode")
        )
        if len(prefill) * len(decode) > MAX_PHASE_PAIRS:
            count = len(prefill) * len(decode)
            raise phases.error("decode", f"{count} pairs; phase_clocks takes at most {MAX_PHASE_PAIRS}")
        pairs = [(p, d) for p in prefill for d in decode]
    else:
        for path, item in phases.items("pairs", None, MAX_PHASE_PAIRS):
            ok = isinstance(item, list) and len(item) == 2
            if not (ok and all(is_number(v) and isinstance(v, int) and 1 <= v <= MAX_MHZ for v in item)):
                problem = (
                    f"must be [prefill MHz, decode MHz], integers in [1, {MAX_MHZ}], got {excerpt(item)}"
                )
                raise section.doc.error(path, problem)
            if (item[0], item[1]) in pairs:
                raise section.doc.error(path, f"{item} is listed twice")
            pairs.append((int(item[0]), int(item[1])))
    return tuple(pairs), phases.number("latency_budget", 1.1, 1.0, 10.0)


def read_dvfs(section: Section) -> DvfsParams:
    """Validates the ``dvfs:`` section."""
    given = [key for key in CHANGES if section.has(key)]
    if not given:
        wanted = "give sm_clocks, sm_clock_range, phase_clocks, memory_clock or power_limit_w"
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
    pairs, pair_budget = _phase_pairs(section) if section.has("phase_clocks") else ((), 1.1)
    if pairs:
        for key, what in (("search", "a search"), ("sm_clock_range", "a range lock")):
            if section.has(key):
                raise section.error(key, f"phase_clocks switch the SM clock lock: leave out {what}")
        if section.has("sm_clocks") and single:
            raise section.error(
                "sm_clocks", "phase_clocks switch the SM clock lock: give a sweep or leave it out"
            )
    if single and not pairs:
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
        phase_pairs=pairs,
        phase_latency_budget=pair_budget,
    )
