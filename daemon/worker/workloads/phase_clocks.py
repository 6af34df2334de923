"""Phase-aware clocks: an llm point whose requests run prefill at one SM clock and decode at another.

gpuprofd locks the decode clock at a request's first token and the prefill clock again as its decode ends,
so that the next prefill finds it (and as a prefill begins, if it is not locked yet), each on the worker's
request through the marker channel, made inside the phase so that its time is the phase's. Each switch is
marked as a ``clock_switch`` window from the request to gpuprofd's answer, with the instant the NVML call
returned (``applied_ns``); gpuprofd finds in its trace when the new clock was first observed, which gives
the switch's latency and energy (docs/llm.md, "Phase-aware clocks").
"""

from __future__ import annotations

import time
from typing import Any

from ..llm.engine import Phases
from ..markers import MarkerWriter

__all__ = ["STEADY_SETTLE_S", "PhaseClocks"]

STEADY_SETTLE_S = 0.2  # idle after a switch before a steady phase, so that its windows run at its clock


class PhaseClocks:
    """The (prefill, decode) SM clock pair of a point, and the clock gpuprofd was last asked to lock."""

    def __init__(self, markers: MarkerWriter, prefill_mhz: int, decode_mhz: int, current: int | None) -> None:
        self.markers = markers
        self.prefill_mhz, self.decode_mhz = prefill_mhz, decode_mhz
        self.current = current
        self.switches = 0

    def clock_of(self, phase: str) -> int:
        return self.prefill_mhz if phase == "prefill" else self.decode_mhz

    def switch(self, phase: str, batch_id: str) -> None:
        """Has gpuprofd lock ``phase``'s clock unless it is locked already, marking the switch."""
        mhz = self.clock_of(phase)
        if mhz == self.current:
            return
        switch_id = f"{batch_id}.w{self.switches}"
        self.markers.begin("clock_switch", id=switch_id, phase=phase, from_mhz=self.current, to_mhz=mhz)
        reply = self.markers.set_clocks(mhz, phase=phase)
        applied = reply.get("applied_ns")
        self.markers.end(
            "clock_switch", id=switch_id, applied_ns=applied if isinstance(applied, int) else None
        )
        self.current = mhz
        self.switches += 1

    def before_steady(self, phase: str) -> None:
        """Locks a steady phase's clock (``steady_prefill`` or ``steady_decode``) and waits for it to take
        effect, outside any window: a steady phase measures its clock, not the switch."""
        mhz = self.clock_of(phase.removeprefix("steady_"))
        if mhz != self.current:
            self.markers.set_clocks(mhz)
            self.current = mhz
            time.sleep(STEADY_SETTLE_S)

    def phases(self, inner: Phases, batch_id: str, decodes: bool) -> Phases:
        """``inner`` with the lock switched at the phase edges: decode's clock at the first token, prefill's
        as the decode ends (a batch that ``decodes``: a scored choice has none to switch for), and as a
        prefill begins if it is not locked yet."""
        return _SwitchingPhases(self, inner, batch_id, decodes)


class _SwitchingPhases:
    """A batch's phases, the switches made inside them: after a phase's begin is reported, before a
    decode's end is."""

    def __init__(self, clocks: PhaseClocks, inner: Phases, batch_id: str, decodes: bool) -> None:
        self.clocks, self.inner, self.batch_id, self.decodes = clocks, inner, batch_id, decodes

    def begin(self, name: str, **attrs: Any) -> None:
        self.inner.begin(name, **attrs)
        if name == "prefill" or (name == "decode" and self.decodes):
            self.clocks.switch(name, self.batch_id)

    def end(self, name: str, **attrs: Any) -> None:
        if name == "decode" and self.decodes:  # back to the prefill clock, for the next request
            self.clocks.switch("prefill", self.batch_id)
        self.inner.end(name, **attrs)
