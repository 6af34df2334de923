"""Phase-aware clocks: each new figure checked on constructed data (switches, pairs, the optimum against the
best single clock, their intervals), and the worker's switching at phase edges with a recording writer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from gpuprof.daemon.analysis.phase_clocks import (
    compare,
    mean_ci,
    phase_clocks_section,
    reaches,
    switch_rows,
    welch_half_width,
)
from gpuprof.daemon.analysis.windows import PhaseWindow
from gpuprof.daemon.worker.workloads.phase_clocks import PhaseClocks

MS = 1_000_000


class FakeTrace:
    """SM clock samples every millisecond, and a constant power: the energy of [t0, t1] is exact."""

    def __init__(self, changes: list[tuple[int, int]], end_ns: int, power_w: float = 400.0) -> None:
        self.clock_t = np.arange(0, end_ns, MS, dtype=np.int64)
        self.clock_mhz = np.zeros(self.clock_t.size)
        for t, mhz in changes:  # (from t, clock)
            self.clock_mhz[self.clock_t >= t] = mhz
        self.power_w = power_w

    def energy(self, t0: int, t1: int) -> tuple[float | None, float | None]:
        return self.power_w * (t1 - t0) / 1e9, 1.0

    def median_clock(self, t0: int, t1: int) -> float | None:
        lo, hi = np.searchsorted(self.clock_t, [t0, t1], side="left")
        return float(np.median(self.clock_mhz[lo:hi])) if hi > lo else None


def test_mean_ci_is_students_t_interval_of_the_mean() -> None:
    values = [1.0, 2.0, 4.0, 5.0]
    mean, half = mean_ci([*values, None])
    expected = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert mean == 3.0 and half == pytest.approx(expected)
    assert mean_ci([7.0]) == (7.0, None) and mean_ci([None]) == (None, None)


def test_welch_half_width_matches_scipys_interval_of_a_difference() -> None:
    a, b = [10.0, 11.0, 12.5, 9.5, 10.5], [8.0, 8.5, 7.0, 9.0, 8.2, 7.7, 8.9]
    low, high = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch_half_width(a, b) == pytest.approx((high - low) / 2)
    assert welch_half_width(a, [1.0]) is None
    assert welch_half_width([2.0, 2.0], [1.0, 1.0]) == 0.0


def test_a_clock_is_reached_within_tolerance_and_nearer_the_new_clock_than_the_old() -> None:
    assert reaches(900, 900, 1200) and reaches(915, 900, 1200)
    assert not reaches(1200, 900, 1200) and not reaches(960, 900, 1200)
    assert not reaches(1005, 990, 1020)  # equally near both: not yet switched
    assert reaches(990, 990, None)


def _switch(t0: int, t1: int, to: int, frm: int, applied: int | None, switch_id: str) -> PhaseWindow:
    attrs = {"id": switch_id, "phase": "decode", "to_mhz": to, "from_mhz": frm, "applied_ns": applied}
    return PhaseWindow("clock_switch", t0, t1, attrs)


def test_switch_rows_time_a_switch_from_its_request_to_the_first_sample_at_the_new_clock() -> None:
    trace = FakeTrace([(0, 1200), (1_020 * MS, 900)], 3_000 * MS)
    windows = [
        _switch(1_000 * MS, 1_001 * MS, 900, 1200, 1_000 * MS + 800_000, "p1.r0.b0.w0"),
        _switch(2_000 * MS, 2_002 * MS, 1410, 900, None, "p1.r0.b0.w1"),  # never reached
    ]
    first, never = switch_rows(windows, trace)
    assert first["point"] == "p1" and first["seen"]
    assert first["call_s"] == pytest.approx(0.001)
    assert first["latency_s"] == pytest.approx(0.020)
    assert first["settle_s"] == pytest.approx(0.0192)
    assert first["energy_j"] == pytest.approx(400 * 0.020) and first["energy_bound_j"] == 1.0
    assert not never["seen"] and never["latency_s"] is None and never["energy_j"] is None


def test_a_switch_is_looked_for_only_until_the_next_one() -> None:
    trace = FakeTrace([(0, 1200), (1_050 * MS, 900)], 2_000 * MS)
    windows = [
        _switch(1_000 * MS, 1_001 * MS, 900, 1200, None, "p0.r0.b0.w0"),
        _switch(1_030 * MS, 1_031 * MS, 600, 900, None, "p0.r0.b0.w1"),
    ]
    superseded, _ = switch_rows(windows, trace)
    assert not superseded["seen"]  # 900 MHz showed only after the next switch was asked for


def _candidate(energies: list[float], latency: float, flagged: bool = False, **clocks: int) -> dict[str, Any]:
    return {
        "point": "p", "energy_j": float(np.mean(energies)), "energy_j_ci95": 0.1, "latency_s": latency,
        "latency_s_ci95": 0.0, "energies": energies, "flagged": flagged, **clocks,
    }  # fmt: skip


def test_compare_picks_the_cheapest_pair_and_single_clock_within_the_budget() -> None:
    singles = [
        _candidate([10.0, 10.2, 9.8], 1.0, sm_clock_mhz=1980),
        _candidate([8.0, 8.3, 7.7], 1.2, sm_clock_mhz=1200),
        _candidate([7.0, 7.1, 6.9], 1.5, sm_clock_mhz=900),  # over the budget
    ]
    pairs = [
        _candidate([7.5, 7.6, 7.4], 1.05, prefill_clock_mhz=1980, decode_clock_mhz=900),
        _candidate([6.0, 6.1, 5.9], 1.6, prefill_clock_mhz=1200, decode_clock_mhz=600),  # over the budget
        _candidate([5.0, 5.0, 5.0], 1.0, True, prefill_clock_mhz=1980, decode_clock_mhz=345),  # flagged
    ]
    out = compare(pairs, singles, 1.25)
    assert out["reference_sm_clock_mhz"] == 1980 and out["latency_budget_s"] == pytest.approx(1.25)
    assert (out["phase_aware"]["prefill_clock_mhz"], out["phase_aware"]["decode_clock_mhz"]) == (1980, 900)
    assert out["single_clock"]["sm_clock_mhz"] == 1200
    assert out["saving_j"] == pytest.approx(0.5)
    assert out["saving_j_ci95"] == pytest.approx(welch_half_width([8.0, 8.3, 7.7], [7.5, 7.6, 7.4]))
    assert out["saving_fraction"] == pytest.approx(0.5 / 8.0)

    wider = compare(pairs, singles, 1.7)  # now 900 MHz and the 1200/600 pair are within it
    assert wider["single_clock"]["sm_clock_mhz"] == 900 and wider["phase_aware"]["decode_clock_mhz"] == 600
    assert wider["saving_j"] == pytest.approx(1.0)


def test_compare_without_an_unflagged_single_clock_has_no_budget() -> None:
    pairs = [_candidate([5.0, 5.1], 1.0, prefill_clock_mhz=1980, decode_clock_mhz=900)]
    out = compare(pairs, [_candidate([9.0, 9.1], 1.0, True, sm_clock_mhz=1980)], 1.1)
    assert out["latency_budget_s"] is None and out["phase_aware"] is None and out["saving_j"] is None


def _requests(point: str, energies: list[float], latency: float) -> list[dict[str, Any]]:
    return [
        {"point": point, "batch": f"{point}.r0.b{i // 2}", "energy_j": e, "j_per_token": e / 10,
         "latency_s": latency + 0.01 * i, "ttft_s": 0.1, "tpot_s": 0.01, "observed_sm_clock_mhz": None}
        for i, e in enumerate(energies)
    ]  # fmt: skip


def test_the_section_reports_each_pair_its_phases_clocks_switches_and_the_optimum() -> None:
    # Point p0 at 1410 MHz alone; point p1 with prefill at 1410 and decode at 990, one batch of two requests:
    # prefill [1.0, 1.1] s, decode [1.1, 1.5] s; the switch to 990 asked at 1.1 s shows at 1.12 s.
    trace = FakeTrace([(0, 1410), (1_120 * MS, 990), (1_520 * MS, 1410)], 3_000 * MS)
    point = {"model": "m", "task": "qa", "batch_size": 2}
    windows = [
        PhaseWindow("point", 0, 900 * MS, {"id": "p0", "sm_clock_mhz": 1410, **point}),
        PhaseWindow("point", 950 * MS, 1_600 * MS, {"id": "p1", "prefill_clock_mhz": 1410,
                                                     "decode_clock_mhz": 990, **point}),
        PhaseWindow("prefill", 1_000 * MS, 1_100 * MS, {"id": "p1.r0.b0"}),
        PhaseWindow("decode", 1_100 * MS, 1_500 * MS, {"id": "p1.r0.b0"}),
        _switch(1_100 * MS, 1_101 * MS, 990, 1410, 1_100 * MS + 500_000, "p1.r0.b0.w0"),
        _switch(1_499 * MS, 1_500 * MS, 1410, 990, 1_500 * MS, "p1.r0.b0.w1"),
    ]  # fmt: skip
    rows = _requests("p0", [10.0, 11.0, 10.5, 9.5], 1.0) + _requests("p1", [8.0, 8.5], 1.05)
    rows[0]["observed_sm_clock_mhz"] = 1410.0
    section = phase_clocks_section(rows, windows, trace, 1.1, simulated=True)
    assert section is not None and section["simulated"]
    (pair,) = section["pairs"]
    assert (pair["observed_prefill_clock_mhz"], pair["observed_decode_clock_mhz"]) == (1410, 990)
    assert pair["prefill_at_clock_share"] == 1.0
    assert pair["decode_at_clock_share"] == pytest.approx(380 / 400)  # 20 ms at 1410 before the switch
    assert not pair["flagged"] and pair["requests"] == 2
    assert pair["energy_j"] == pytest.approx(8.25) and pair["j_per_token"] == pytest.approx(0.825)
    assert pair["latency_s"] == pytest.approx(1.055)
    assert pair["switch"]["switches"] == 2 and pair["switch"]["per_batch"] == 2
    assert pair["switch"]["latency_s"] == pytest.approx(0.0205)  # 20 ms and 21 ms
    assert section["switches"]["settle_s"] == pytest.approx((0.0195 + 0.020) / 2)
    (comparison,) = section["comparisons"]
    assert comparison["reference_sm_clock_mhz"] == 1410
    assert comparison["latency_budget_s"] == pytest.approx(1.1 * 1.015)
    assert comparison["phase_aware"]["point"] == "p1" and comparison["single_clock"]["point"] == "p0"
    assert comparison["saving_j"] == pytest.approx(10.25 - 8.25)
    assert comparison["saving_j_ci95"] == pytest.approx(welch_half_width([10.0, 11.0, 10.5, 9.5], [8.0, 8.5]))
    assert phase_clocks_section(rows[:4], windows[:1], trace, 1.1, simulated=False) is None


class RecordingWriter:
    """Markers and clock requests, as the worker would send them."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def begin(self, name: str, **attrs: Any) -> None:
        self.sent.append(("begin", name, attrs.get("id"), attrs.get("to_mhz")))

    def end(self, name: str, **attrs: Any) -> None:
        self.sent.append(("end", name, attrs.get("id"), attrs.get("applied_ns")))

    def set_clocks(
        self, mhz: int | None, timeout_s: float = 60.0, phase: str | None = None
    ) -> dict[str, Any]:
        self.sent.append(("dvfs", mhz, phase))
        return {"ok": True, "sm_clock_mhz": mhz, "applied_ns": 123}


def test_the_lock_switches_to_decode_at_the_first_token_and_back_as_decode_ends() -> None:
    writer = RecordingWriter()
    clocks = PhaseClocks(writer, 1410, 990, current=1410)  # type: ignore[arg-type]
    phases = clocks.phases(writer, "p0.r0.b0", decodes=True)  # type: ignore[arg-type]
    for name in ("tokenize", "prefill"):
        phases.begin(name)
        phases.end(name)
    phases.begin("decode")
    phases.end("decode")
    assert writer.sent == [
        ("begin", "tokenize", None, None), ("end", "tokenize", None, None),
        ("begin", "prefill", None, None), ("end", "prefill", None, None),  # already at 1410: no switch
        ("begin", "decode", None, None),
        ("begin", "clock_switch", "p0.r0.b0.w0", 990), ("dvfs", 990, "decode"),
        ("end", "clock_switch", "p0.r0.b0.w0", 123),
        ("begin", "clock_switch", "p0.r0.b0.w1", 1410), ("dvfs", 1410, "prefill"),
        ("end", "clock_switch", "p0.r0.b0.w1", 123),
        ("end", "decode", None, None),  # the switch back is inside the decode
    ]  # fmt: skip
    writer.sent.clear()
    choice = clocks.phases(writer, "p0.r0.b1", decodes=False)  # type: ignore[arg-type]
    choice.begin("prefill")
    choice.begin("decode")
    choice.end("decode")
    assert [s for s in writer.sent if s[0] == "dvfs"] == []  # a scored choice never decodes


def test_a_pair_of_equal_clocks_never_switches() -> None:
    writer = RecordingWriter()
    phases = PhaseClocks(writer, 1200, 1200, current=1200).phases(writer, "b", True)  # type: ignore[arg-type]
    for name in ("prefill", "decode"):
        phases.begin(name)
        phases.end(name)
    assert all(s[0] != "dvfs" for s in writer.sent)
