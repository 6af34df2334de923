"""A phase-aware sweep's result for the terminal: each (prefill, decode) clock pair, its switches, and the
phase-aware optimum against the best single clock within the latency budget (docs/llm.md)."""

from __future__ import annotations

from typing import Any

from .formats import number

__all__ = ["render_phase_clocks"]


def _fmt(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    return number(value, digits=digits, missing="-", scale=scale)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    cells = [zip(row, widths, strict=True) for row in [header, *rows]]
    return [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(row)).rstrip() for row in cells
    ]


def _pm(value: Any, spread: Any, digits: int = 3, scale: float = 1.0) -> str:
    """``value ± spread``, or the value alone where no interval is known."""
    if value is None:
        return "-"
    shown = _fmt(value, digits, scale)
    return f"{shown} ± {_fmt(spread, digits, scale)}" if spread is not None else shown


def _switches(figures: dict[str, Any]) -> str:
    latency = _pm(figures.get("latency_s"), figures.get("latency_s_ci95"), 3, 1e3)
    return (
        f"{figures.get('switches', 0)} switches: latency {latency} ms "
        f"(the GPU's {_fmt(figures.get('settle_s'), 3, 1e3)} ms after gpuprofd's "
        f"{_fmt(figures.get('call_s'), 3, 1e3)} ms call), energy "
        f"{_pm(figures.get('energy_j'), figures.get('energy_j_ci95'))} J a switch (bound of one "
        f"{_fmt(figures.get('energy_bound_j'))} J), {figures.get('unseen', 0)} not seen"
    )


def _clocks(choice: dict[str, Any] | None) -> str:
    if choice is None:
        return "none within the budget"
    if choice.get("sm_clock_mhz") is not None:
        return f"{choice['sm_clock_mhz']} MHz"
    return f"{choice.get('prefill_clock_mhz')}/{choice.get('decode_clock_mhz')} MHz"


def _comparison(c: dict[str, Any]) -> str:
    phase, single = c.get("phase_aware"), c.get("single_clock")
    head = (
        f"    {c.get('model')} {c.get('task')} batch {c.get('batch_size')}, latency within "
        f"{_fmt(c.get('latency_budget'))} x {_fmt(c.get('reference_latency_s'), 4)} s "
        f"(at {_fmt(c.get('reference_sm_clock_mhz'), 0)} MHz): phase-aware {_clocks(phase)}"
    )
    if phase is not None:
        head += f" {_pm(phase.get('energy_j'), phase.get('energy_j_ci95'))} J/request"
    head += f", single clock {_clocks(single)}"
    if single is not None:
        head += f" {_pm(single.get('energy_j'), single.get('energy_j_ci95'))} J/request"
    if c.get("saving_j") is not None:
        fraction = c.get("saving_fraction")
        share = f" ({_fmt(fraction * 100, 2)} %)" if fraction is not None else ""
        head += f"; saving {_pm(c['saving_j'], c.get('saving_j_ci95'))} J/request{share}"
    return head


def render_phase_clocks(section: dict[str, Any] | None, simulated: bool) -> list[str]:
    """Lines for ``dvfs.phase_clocks``: the pairs' table, the switches, and the optimum per group."""
    if not section or not section.get("pairs"):
        return []
    pairs = section["pairs"]
    tag = " (SIMULATED)" if simulated or section.get("simulated") else ""
    lines = [f"  phase-aware clocks{tag}: {len(pairs)} pairs, {_switches(section.get('switches') or {})}"]
    header = [
        "MODEL", "TASK", "BATCH", "PREFILL MHz", "DECODE MHz", "OBSERVED", "AT CLOCK %", "J/REQ", "± CI95",
        "J/TOK", "LATENCY s", "± CI95", "SWITCHES/BATCH", "SWITCH ms", "FLAG",
    ]  # fmt: skip
    rows = []
    key = ("model", "task", "batch_size", "prefill_clock_mhz", "decode_clock_mhz")
    for p in sorted(pairs, key=lambda p: tuple(str(p.get(k)) for k in key)):
        switch = p.get("switch") or {}
        shares = [p.get("prefill_at_clock_share"), p.get("decode_at_clock_share")]
        rows.append([
            str(p.get("model")), str(p.get("task")), str(p.get("batch_size")),
            str(p.get("prefill_clock_mhz")), str(p.get("decode_clock_mhz")),
            f"{_fmt(p.get('observed_prefill_clock_mhz'), 0)}/{_fmt(p.get('observed_decode_clock_mhz'), 0)}",
            "/".join(_fmt(s, 1, 100) for s in shares),
            _fmt(p.get("energy_j"), 2), _fmt(p.get("energy_j_ci95"), 2), _fmt(p.get("j_per_token"), 4),
            _fmt(p.get("latency_s"), 4), _fmt(p.get("latency_s_ci95"), 4),
            _fmt(switch.get("per_batch"), 2), _fmt(switch.get("latency_s"), 3, 1e3),
            "FLAGGED" if p.get("flagged") else "",
        ])  # fmt: skip
    lines += ["    " + line for line in _table(header, rows)]
    lines += [_comparison(c) for c in section.get("comparisons") or []]
    return lines
