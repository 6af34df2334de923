"""The burn workload: ``kind`` work at a duty cycle, on a real GPU (torch) or on the simulated GPU.

Each period of ``period_s`` is busy for ``duty_cycle * period_s`` and idle for the rest; periods follow a
fixed schedule from the phase's start, so lateness does not accumulate. Markers: ``load``, ``warmup`` (the
same on/off pattern, unmarked, so that clocks and temperature settle in the measured regime), ``measure``
(the whole measured run) and inside it one ``step`` per period, spanning its busy part: the step begins
before its work starts and ends after the GPU finished it (torch.cuda.synchronize) or, simulated, after the
utilization went back to 0. Steps count the operations done (``ops``).

With a clock sweep (``dvfs.sm_clocks`` a list, a range or all) ``measure`` holds one ``point`` window per
SM clock: gpuprofd locks the clock, the pattern runs ``BURN_SETTLE_S`` unmarked (so that the power sensor,
which lags, reports the point's own power when its window opens), then ``seconds`` marked, then
``BURN_TAIL_S`` unmarked (so that the energy counter's update period around the window's end holds the same
steady work as the window: the fused estimate splits it evenly and exactly); the clock is unlocked after the
point however it ended. Energy and time per operation make the point's figures, so a
fixed amount of work costs more time at a lower clock. ``dvfs.search`` measures only the clocks a
golden-section search for the optimum needs.

On the simulated GPU an operation takes what the H100's spec sheet says at the top clock (``SIM_PEAK``),
longer at a lower clock by the documented slowdown: matmul is compute-bound, memcpy memory-bound.
"""

from __future__ import annotations

import importlib
import os
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from gpuprof.client.wire.dvfs_spec import DvfsParams
from gpuprof.client.wire.errors import DeviceNotFound, GpuprofError
from gpuprof.client.wire.jobspec import BURN_SETTLE_S, BURN_TAIL_S, BurnParams

from ..markers import MarkerWriter
from .clock_search import search_clock
from .target import GpuTarget, sigterm_deferred

CHUNK_S = 0.01  # GPU work queued between two clock checks: how late a busy part may end
MAX_CHUNK_OPS = 10_000
SWEEP_SEED = 0  # of an interleaved sweep's order
PROGRESS_EVERY_S = 1.0  # between two status markers with the seconds done
# The H100 SXM's spec-sheet peaks, which the simulated GPU reaches at its top clock: dense FLOP/s of a
# matmul by dtype (float32 without TF32, as torch runs it by default) and HBM3 bytes/s (a copy reads and
# writes each byte).
SIM_PEAK = {"bfloat16": 989.4e12, "float16": 989.4e12, "float32": 66.9e12, "hbm": 3.35e12}
Clock = Callable[[], int]
Sleep = Callable[[float], None]


class BurnEngine(Protocol):
    """Makes a GPU busy or idle; ``work_attrs`` describe one operation (for the load marker)."""

    description: str
    work_attrs: dict[str, Any]

    def busy_until(self, deadline_ns: int) -> int | None:
        """Keeps the GPU busy until ``deadline_ns`` with its work finished; returns operations done."""

    def idle(self) -> None:
        """Leaves the GPU idle."""

    def close(self) -> None:
        """Leaves the GPU idle and releases what the engine holds; safe to call twice."""


def sleep_until(deadline_ns: int, clock: Clock, sleep: Sleep) -> None:
    while (left := deadline_ns - clock()) > 0:
        sleep(left / 1e9)


def sim_op_seconds(params: BurnParams) -> float:
    """One operation's time on the simulated GPU at its top clock."""
    if params.kind == "matmul":
        return 2 * params.size**3 / SIM_PEAK[params.dtype]
    return 2 * (params.size << 20) / SIM_PEAK["hbm"]


class SimulatedBurn:
    """Drives simulated GPU ``index``: utilization 100 % while busy, 0 % otherwise and at the end.

    It counts the operations the simulated GPU would have done: each ``CHUNK_S`` of busy time at the SM
    clock it runs at then, ``chunk / (sim_op_seconds x slowdown(clock))``.
    """

    def __init__(self, index: int, params: BurnParams, clock: Clock, sleep: Sleep) -> None:
        from gpuprof.sampler.sim import COMPUTE_BOUND, MEMORY_BOUND, SimulatedNvml

        self._sim = SimulatedNvml()
        gpus = self._sim.status()
        if index >= len(gpus):
            raise DeviceNotFound(index, len(gpus))
        self._index, self._clock, self._sleep = index, clock, sleep
        self.description = f"simulated GPU {index} ({gpus[index].name})"
        self._op_s = sim_op_seconds(params)
        self._share = COMPUTE_BOUND if params.kind == "matmul" else MEMORY_BOUND
        defaults = self._sim.default_config().gpus
        self._top_mhz = defaults[min(index, len(defaults) - 1)].max_graphics_clock_mhz
        self.work_attrs: dict[str, Any] = {"sim_op_s_at_top_clock": self._op_s}
        self._busy = False
        self._done = 0.0  # operations, fractional: only whole ones are reported
        self._reported = 0

    def busy_until(self, deadline_ns: int) -> int | None:
        from gpuprof.sampler.sim import slowdown

        if not self._busy:
            self._sim.set_utilization(self._index, 100)
            self._busy = True
        now = self._clock()
        while now < deadline_ns:
            mhz = self._sim.status()[self._index].sm_clock_mhz
            sleep_until(min(deadline_ns, now + int(CHUNK_S * 1e9)), self._clock, self._sleep)
            later = self._clock()
            self._done += (later - now) / 1e9 / (self._op_s * slowdown(self._share, self._top_mhz, mhz))
            now = later
        ops = int(self._done) - self._reported
        self._reported += ops
        return ops

    def idle(self) -> None:
        if self._busy:
            self._sim.set_utilization(self._index, 0)
            self._busy = False

    def close(self) -> None:
        self._sim.set_utilization(self._index, 0)
        self._busy = False


class TorchBurn:
    """Matmuls of ``size``² ``dtype`` matrices, or device-to-device copies of ``size`` MiB, on cuda:0."""

    def __init__(self, params: BurnParams, clock: Clock) -> None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and not visible.strip():  # known without the seconds torch takes to import
            raise GpuprofError("no CUDA GPU is visible to the worker (CUDA_VISIBLE_DEVICES is empty)")
        try:
            torch: Any = importlib.import_module("torch")  # only here: the simulated path never needs it
        except ImportError as exc:
            raise GpuprofError(
                f"the burn workload needs torch on a real GPU ({exc}); install it with "
                "pip install 'gpuprof[inference]', or run the job on the simulated GPU"
            ) from None
        if not torch.cuda.is_available():
            raise GpuprofError(f"no CUDA GPU is visible to the worker (CUDA_VISIBLE_DEVICES={visible!r})")
        self._torch, self._clock = torch, clock
        device = torch.device("cuda:0")
        if params.kind == "matmul":
            n = params.size
            a = torch.randn(n, n, device=device, dtype=getattr(torch, params.dtype))
            b, out = torch.randn_like(a), torch.empty_like(a)
            self._op: Callable[[], object] = lambda: torch.matmul(a, b, out=out)
            self.work_attrs = {"flop_per_op": 2 * n**3}
        else:
            nbytes = params.size << 20
            src = torch.ones(nbytes, device=device, dtype=torch.uint8)
            dst = torch.empty_like(src)
            self._op = lambda: dst.copy_(src)
            self.work_attrs = {"bytes_per_op": nbytes}
        self.description = str(torch.cuda.get_device_name(0))
        self._chunk = self._calibrate()

    def _calibrate(self) -> int:
        """Operations per chunk so that one chunk takes about CHUNK_S (the first calls also warm cuBLAS)."""
        for _ in range(2):
            self._op()
        self._torch.cuda.synchronize()
        start = self._clock()
        for _ in range(3):
            self._op()
        self._torch.cuda.synchronize()
        per_op_ns = max(1, (self._clock() - start) // 3)
        return max(1, min(MAX_CHUNK_OPS, int(CHUNK_S * 1e9) // per_op_ns))

    def busy_until(self, deadline_ns: int) -> int | None:
        ops = 0
        while self._clock() < deadline_ns:
            for _ in range(self._chunk):
                self._op()
            self._torch.cuda.synchronize()  # the marker that follows must close finished work
            ops += self._chunk
        return ops

    def idle(self) -> None:
        pass  # busy_until returns with the GPU synchronized: nothing is queued

    def close(self) -> None:
        self._torch.cuda.synchronize()


def open_engine(params: BurnParams, target: GpuTarget, clock: Clock, sleep: Sleep) -> BurnEngine:
    if target.simulated:
        return SimulatedBurn(target.sim_index, params, clock, sleep)
    return TorchBurn(params, clock)


def _cycle(
    engine: BurnEngine,
    params: BurnParams,
    start_ns: int,
    seconds: float,
    clock: Clock,
    sleep: Sleep,
    markers: MarkerWriter | None,
    progress: _Progress | None = None,
) -> tuple[int, int | None]:
    """Runs the on/off pattern from ``start_ns`` for ``seconds``; returns (periods, operations or None)."""
    period_ns = round(params.period_s * 1e9)
    on_ns = round(params.duty_cycle * params.period_s * 1e9)
    end_ns = start_ns + round(seconds * 1e9)
    periods, total = 0, None
    period_start = start_ns
    while period_start < end_ns:
        busy_end = min(period_start + on_ns, end_ns)
        next_start = min(period_start + period_ns, end_ns)
        if markers:
            markers.begin("step", index=periods)
        ops = engine.busy_until(busy_end)
        if busy_end < next_start:
            engine.idle()
        if markers:
            markers.end("step", index=periods, **({} if ops is None else {"ops": ops}))
        if ops is not None:
            total = (total or 0) + ops
        if progress is not None:
            progress.tick()
        periods += 1
        sleep_until(next_start, clock, sleep)
        period_start += period_ns
    return periods, total


def run(
    params: BurnParams,
    markers: MarkerWriter,
    target: GpuTarget,
    dvfs: DvfsParams | None = None,
    clock: Clock = time.monotonic_ns,
    sleep: Sleep = time.sleep,
) -> None:
    """Loads the engine, warms up, then runs the measured periods (at each clock of a sweep); the GPU is
    left idle however it ends."""
    markers.begin("load", workload="burn", kind=params.kind, size=params.size, dtype=params.dtype)
    engine = open_engine(params, target, clock, sleep)
    progress = _Progress(markers, clock, _planned_s(params, dvfs))
    try:
        markers.end("load", device=engine.description, simulated=target.simulated, **engine.work_attrs)
        what = f"{params.kind} for {params.seconds:g} s at duty cycle {params.duty_cycle:g}"
        sweep = dvfs if dvfs is not None and dvfs.sweep else None
        if sweep is not None:
            what += f" at each of {len(sweep.sweep)} SM clocks" + (" (searched)" if sweep.search else "")
        progress.start(f"burn: {what} on {engine.description}")
        markers.begin("warmup", seconds=params.warmup_s)
        _cycle(engine, params, clock(), params.warmup_s, clock, sleep, None, progress)
        engine.idle()
        markers.end("warmup")
        markers.begin(
            "measure", seconds=params.seconds, duty_cycle=params.duty_cycle, period_s=params.period_s
        )
        if sweep is not None:
            _Sweep(engine, params, sweep, markers, clock, sleep, progress).run()
            markers.end("measure")
        else:
            steps, ops = _cycle(engine, params, clock(), params.seconds, clock, sleep, markers, progress)
            engine.idle()
            markers.end("measure", steps=steps, **({} if ops is None else {"ops": ops}))
    finally:
        with sigterm_deferred():  # a SIGTERM now must not leave the GPU busy
            engine.close()


def _planned_s(params: BurnParams, dvfs: DvfsParams | None) -> float | None:
    """How long the job's work lasts, where that is known before it runs (a search's points are not)."""
    if dvfs is None or not dvfs.sweep:
        return params.warmup_s + params.seconds
    if dvfs.search is not None:
        return None
    point = dvfs.cooldown_s + BURN_SETTLE_S + params.seconds + BURN_TAIL_S
    return params.warmup_s + len(dvfs.sweep) * point


class _Progress:
    """Status markers with the seconds done of those planned, at most every PROGRESS_EVERY_S: clients show
    the share done and the time left."""

    def __init__(self, markers: MarkerWriter, clock: Clock, planned_s: float | None) -> None:
        self.markers, self.clock, self.planned_s = markers, clock, planned_s
        self.began_ns = clock()
        self.text = ""
        self.said_ns = 0

    def start(self, text: str) -> None:
        """A new step: its line, now."""
        self.text = text
        self.said_ns = 0
        self.tick()

    def tick(self) -> None:
        now = self.clock()
        if self.said_ns and now - self.said_ns < PROGRESS_EVERY_S * 1e9:
            return
        self.said_ns = now
        if self.planned_s is None:
            self.markers.status(self.text)
            return
        done = min((now - self.began_ns) / 1e9, self.planned_s)
        self.markers.status(self.text, done=round(done, 3), total=self.planned_s)


class _Sweep:
    """A burn job's points, one per SM clock, each locked before it and unlocked after it."""

    def __init__(
        self,
        engine: BurnEngine,
        params: BurnParams,
        dvfs: DvfsParams,
        markers: MarkerWriter,
        clock: Clock,
        sleep: Sleep,
        progress: _Progress | None = None,
    ) -> None:
        self.engine, self.params, self.dvfs, self.markers = engine, params, dvfs, markers
        self.clock, self.sleep, self.progress = clock, sleep, progress
        self.count = 0
        self.flagged: set[int] = set()  # clocks whose point ran off its clock (capped)

    def run(self) -> None:
        clocks = list(self.dvfs.sweep)
        if self.dvfs.search is not None:
            self.markers.begin("search", id="burn", objective=self.dvfs.search, grid=len(clocks))
            best, seen = search_clock(clocks, self.measure, self.dvfs.search, self.dvfs.latency_budget,
                                      self.flagged.__contains__)  # fmt: skip
            self.markers.end("search", id="burn", best_mhz=best, measured=sorted(seen))
            return
        if self.dvfs.order == "interleaved":
            random.Random(SWEEP_SEED).shuffle(clocks)
        for mhz in clocks:
            self.point(mhz)

    def point(self, mhz: int) -> str:
        """Runs the point at ``mhz``; returns its id."""
        point_id = f"p{self.count}"
        self.count += 1
        markers, params = self.markers, self.params
        if self.dvfs.cooldown_s > 0:
            markers.begin("cooldown", seconds=self.dvfs.cooldown_s)
            self.sleep(self.dvfs.cooldown_s)
            markers.end("cooldown")
        markers.set_clocks(mhz)
        try:
            text = f"burn: {params.kind} at {mhz} MHz (point {self.count})"
            if self.progress is not None:
                self.progress.start(text)
            else:
                markers.status(text)
            clock, sleep, progress = self.clock, self.sleep, self.progress
            _cycle(self.engine, params, clock(), BURN_SETTLE_S, clock, sleep, None, progress)
            markers.begin("point", id=point_id, sm_clock_mhz=mhz, kind=params.kind, size=params.size)
            steps, ops = _cycle(self.engine, params, clock(), params.seconds, clock, sleep, markers, progress)
            markers.end("point", id=point_id, steps=steps, ops=ops)
            _cycle(self.engine, params, clock(), BURN_TAIL_S, clock, sleep, None, progress)
        finally:
            with sigterm_deferred():
                self.engine.idle()
                markers.set_clocks(None)  # after every point, however it ended
        return point_id

    def measure(self, mhz: int) -> tuple[float, float]:
        """(energy J, seconds) per operation of a point run at ``mhz``, as gpuprofd measured it."""
        figures = self.markers.energy_so_far(self.point(mhz))
        if figures.get("mean_j") is None or figures.get("latency_s") is None:
            raise GpuprofError(f"the point at {mhz} MHz did no measurable work: {figures.get('error')}")
        if figures.get("flagged"):
            self.flagged.add(mhz)
        return float(figures["mean_j"]), float(figures["latency_s"])
