"""``gpuprof.Monitor``: the energy, power and clocks of windows of this process's own code, measured by the
sampler running inside this process; no daemon.

    from gpuprof import Monitor

    with Monitor() as monitor:                 # every GPU, sampled at 1 kHz by a native thread (no GIL)
        monitor.begin_window("epoch")
        train_one_epoch()
        m = monitor.end_window("epoch")        # waits (<= 0.5 s) for the energy counter's next update
        print(m)                               # per GPU: energy ± bound (method), power, clocks
        m.gpus[0].energy_j, m.total_energy_j

        with monitor.window("eval") as w:      # the same as a block; w.measurement is set on exit
            evaluate()

        @monitor.measure("step")               # each call is a window; monitor.last("step") is the latest
        def step(batch): ...

The API:

- ``Monitor(gpus=None, *, simulate=None, rate_hz=1000, backend="cython", history_s=2.0)`` starts the sampler
  on the NVML indices ``gpus`` (default: all) and waits (<= 0.5 s) for each GPU's energy counter to update
  once, so a window begun at once has a counter update before its start. ``simulate=None`` uses the NVIDIA
  driver when it can be loaded and otherwise gpuprof's simulated GPU, with a RuntimeWarning saying so;
  ``True`` always simulates, ``False`` never does. ``close()`` (or leaving ``with``) stops it; closing twice
  is fine.
- ``begin_window(name)`` and ``end_window(name, *, wait=True) -> Measurement``: names are unique among
  open windows (ValueError otherwise, and for ending a window that is not open); windows may nest and
  overlap, and be used from several threads. ``wait=True`` waits until the energy counter has updated
  past the window's end (~10-150 ms) and, where the driver keeps power samples, until those are read past
  it (~0.2-0.4 s), at most 0.5 s in all, so the end edge can be fused; ``wait=False`` returns
  at once with what is known: the counter's figure with its end extended by the power readings
  (``method="counter"``) or integrated power (``"integrated"``), whichever states the smaller bound.
- ``window(name, *, wait=True)``: a context manager yielding a ``WindowHandle`` whose ``measurement`` is
  set on exit (an exception in the block still ends the window, and propagates).
- ``measure(name=None, *, wait=True, callback=None)``: a decorator (``@monitor.measure`` also works):
  each call is a window named ``name`` (default: the function's qualified name); calls may overlap
  (threads, recursion). ``last(name)`` is the latest Measurement of a name, ``callback(measurement)`` is
  called with each one.
- ``interval(name, t_start_ns, t_end_ns, *, wait=True) -> Measurement``: an interval that has already
  passed, timed with ``time.monotonic_ns()`` (CLOCK_MONOTONIC, as every gpuprof time), within the last
  ``history_s`` seconds.
- ``kept_samples`` (the samples held now) and ``stats()`` (the sampler's SamplerStats): what it costs.

Measurement (``sampler/measurement.py``): ``name``, ``t_start_ns``, ``t_end_ns``, ``duration_s``,
``simulated``, ``gpus`` (NVML index -> GpuMeasurement: ``energy_j`` by ``method`` with its bound
``energy_uncertainty_j``, the counter's and integrated figures with theirs, mean and peak power, memory
power, the SM clock's median and 5th-95th percentiles, clock-event reasons, ``short``), ``total_energy_j``.

Memory: a drain thread moves the sampler's records into a RecordStore every 0.25 s (window_records.py):
the last ``history_s`` seconds whole (the samples, 40 B each, the energy readings and the driver's power
samples, ~50 a second at 16 B), and for each open window the readings around its start plus every change
of power reading (~10 a second on an H100) and the energy readings (~20 a second): about 1 kB a second per
GPU while a window stays open, and once all have ended the history alone.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, overload

import numpy as np

from . import open_sampler
from .backend import Sampler, SamplerConfig, SamplerStats
from .device import NvmlSession
from .energy import counter_updates
from .errors import NvmlLibraryNotFound, UsageError
from .library import NvmlLibrary, resolve
from .measurement import GpuMeasurement, Measurement, gpu_measurement
from .window_records import EDGE_NS, LOOKBACK_NS, RecordStore, WindowTally, tallies_of

__all__ = ["GpuMeasurement", "Measurement", "Monitor", "WindowHandle"]

P = ParamSpec("P")
R = TypeVar("R")

DRAIN_PERIOD_S = 0.25  # how often the drain thread empties the sampler's ring (it holds BUFFER_S)
BUFFER_S = 30.0
COUNTER_WAIT_S = 0.5  # the longest wait for the energy counter's next update (it updates every ~100 ms)
POLL_S = 0.005
RECENT_NS = 300_000_000  # energy readings looked at for a counter update: those of the last 0.3 s
# How far past a window's end the driver's power samples must reach (the update period after it), where the
# driver keeps them: the sampler reads them every ~0.3 s, so within the same wait most of the time.
DRIVER_COVER_NS = 150_000_000
LAST_KEPT = 256  # names whose latest Measurement ``last`` keeps


@dataclass
class _Window:
    """An open (or ending) window: its name, start and one tally per GPU."""

    name: str
    t_start_ns: int
    tallies: list[WindowTally] = field(default_factory=list)


@dataclass
class WindowHandle:
    """What ``Monitor.window`` yields: the window's name, and its Measurement once the block has ended."""

    name: str
    measurement: Measurement | None = None


def _choose_library(simulate: bool | None) -> NvmlLibrary:
    if simulate:
        return resolve(simulate=True)
    try:
        return resolve()
    except NvmlLibraryNotFound as exc:
        if simulate is False:
            raise
        warnings.warn(
            f"{exc.path} cannot be loaded ({exc.reason}): gpuprof.Monitor measures gpuprof's SIMULATED GPU, "
            "not a real one (pass simulate=True to choose it, simulate=False to require the driver)",
            RuntimeWarning,
            stacklevel=3,
        )
        return resolve(simulate=True)


def _all_gpus(library: NvmlLibrary) -> tuple[int, ...]:
    with NvmlSession(library) as nvml:
        return tuple(range(nvml.count()))


def _drain_until_stopped(ref: weakref.ref[Monitor], stop: threading.Event) -> None:
    """The drain thread: holds the monitor only while draining, so a forgotten Monitor is still freed."""
    while not stop.wait(DRAIN_PERIOD_S):
        monitor = ref()
        if monitor is None:
            return
        monitor._drain_locked()
        del monitor


def _shut_down(stop: threading.Event, sampler: Sampler) -> None:
    stop.set()
    sampler.close()


class Monitor:
    """Measures windows of this process's code with an in-process sampler (module docstring)."""

    def __init__(
        self,
        gpus: tuple[int, ...] | list[int] | None = None,
        *,
        simulate: bool | None = None,
        rate_hz: float = 1000.0,
        backend: str = "cython",
        history_s: float = 2.0,
    ) -> None:
        if not (EDGE_NS / 1e9 <= history_s <= 3600):
            raise UsageError(f"history_s must be in [{EDGE_NS / 1e9:g}, 3600] s, got {history_s:g}")
        library = _choose_library(simulate)
        self.simulated = library.simulated
        self.gpus = tuple(gpus) if gpus is not None else _all_gpus(library)
        config = SamplerConfig(gpus=self.gpus, rate_hz=rate_hz, buffer_seconds=BUFFER_S)
        self._sampler = open_sampler(config, library, backend)
        self._lock = threading.Lock()
        self._store = RecordStore(int(history_s * 1e9))
        self._open: dict[str, _Window] = {}
        # Windows measured but not open by name: decorated calls running, ended windows awaiting the counter.
        self._unlisted: list[_Window] = []
        self._last: OrderedDict[str, Measurement] = OrderedDict()
        self._stop = threading.Event()
        self._closer = weakref.finalize(self, _shut_down, self._stop, self._sampler)
        try:
            self._sampler.start()
        except BaseException:
            self._closer()
            raise
        self._driver_kept = self._sampler.stats().driver_power  # which GPUs' driver keeps power samples
        self.started_ns = time.monotonic_ns()
        self._thread = threading.Thread(
            target=_drain_until_stopped,
            args=(weakref.ref(self), self._stop),
            name="gpuprof-monitor",
            daemon=True,
        )
        self._thread.start()
        self._await_counter(self.started_ns, driver=False)  # the driver's samples reach a start later

    # -- windows -----------------------------------------------------------------------------------------

    def begin_window(self, name: str) -> None:
        """Open the window ``name`` now; ValueError when a window of that name is open."""
        t_start = time.monotonic_ns()
        with self._lock:
            self._check_open()
            if name in self._open:
                raise ValueError(
                    f"a window named {name!r} is already open: end it first, or choose another name"
                )
            self._open[name] = self._window(name, t_start)

    def end_window(self, name: str, *, wait: bool = True) -> Measurement:
        """Close the window ``name`` now and measure it; ValueError when no window of that name is open.

        ``wait``: first wait (at most 0.5 s) for the energy counter to update past the end (module docstring).
        """
        t_end = time.monotonic_ns()
        with self._lock:
            self._check_open()
            window = self._open.pop(name, None)
            if window is None:
                known = ", ".join(repr(n) for n in self._open) or "none"
                raise ValueError(f"no window named {name!r} is open (open: {known})")
            return self._finish(window, t_end, wait)

    def _window(self, name: str, t_start: int) -> _Window:
        return _Window(name, t_start, [WindowTally(gpu, t_start) for gpu in self.gpus])

    def _finish(self, window: _Window, t_end: int, wait: bool) -> Measurement:
        """Measure ``window`` ending at ``t_end`` (called holding the lock; released while waiting)."""
        for tally in window.tallies:
            tally.t_end_ns = t_end
        self._unlisted.append(window)
        try:
            self._drain()
            if wait:
                self._lock.release()
                try:
                    self._await_counter(t_end)
                finally:
                    self._lock.acquire()
            since = window.t_start_ns - LOOKBACK_NS
            samples, energy = self._store.arrays(since)
            measurement = self._measurement(
                window.name,
                window.t_start_ns,
                t_end,
                samples,
                energy,
                window.tallies,
                self._store.driver_power(since),
            )
        finally:
            self._unlisted.remove(window)
        self._remember(measurement)
        return measurement

    @contextlib.contextmanager
    def window(self, name: str, *, wait: bool = True) -> Iterator[WindowHandle]:
        """Measure a ``with`` block as the window ``name``; the handle's ``measurement`` is set on exit."""
        handle = WindowHandle(name)
        self.begin_window(name)
        try:
            yield handle
        finally:
            handle.measurement = self.end_window(name, wait=wait)

    @overload
    def measure(self, name: Callable[P, R]) -> Callable[P, R]: ...

    @overload
    def measure(
        self,
        name: str | None = None,
        *,
        wait: bool = True,
        callback: Callable[[Measurement], object] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def measure(
        self,
        name: str | Callable[P, R] | None = None,
        *,
        wait: bool = True,
        callback: Callable[[Measurement], object] | None = None,
    ) -> Any:
        """Decorate a function so that each call is measured as a window (module docstring)."""
        if callable(name):
            return self.measure()(name)

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            label = name or function.__qualname__

            @functools.wraps(function)
            def measured(*args: P.args, **kwargs: P.kwargs) -> R:
                t_start = time.monotonic_ns()
                window = self._window(label, t_start)
                with self._lock:
                    self._check_open()
                    self._unlisted.append(window)  # not by name: calls may overlap
                try:
                    return function(*args, **kwargs)
                finally:
                    t_end = time.monotonic_ns()
                    with self._lock:
                        self._unlisted.remove(window)
                        measurement = self._finish(window, t_end, wait)
                    if callback is not None:
                        callback(measurement)

            return measured

        return decorate

    def last(self, name: str) -> Measurement | None:
        """The latest Measurement of a window named ``name`` (of the last 256 names), None if none ended."""
        with self._lock:
            return self._last.get(name)

    def interval(self, name: str, t_start_ns: int, t_end_ns: int, *, wait: bool = True) -> Measurement:
        """Measure [t_start_ns, t_end_ns] (``time.monotonic_ns()`` instants, already passed), named ``name``.

        It must lie within the last ``history_s`` seconds and after the monitor started (ValueError).
        """
        now = time.monotonic_ns()
        if not (self.started_ns <= t_start_ns <= t_end_ns <= now):
            raise ValueError(
                f"interval [{t_start_ns}, {t_end_ns}] ns is not within this monitor's run "
                f"[{self.started_ns}, {now}] ns (time.monotonic_ns() instants, start before end)"
            )
        with self._lock:
            self._check_open()
            self._drain()
            if max(t_start_ns - EDGE_NS, self.started_ns) < self._store.whole_since_ns:
                raise ValueError(
                    f"interval {name!r} starts {(now - t_start_ns) / 1e9:.1f} s ago: this monitor keeps "
                    f"{self._store.history_ns / 1e9:g} s of history (Monitor(history_s=...))"
                )
        if wait:
            self._await_counter(t_end_ns)
        with self._lock:
            since = t_start_ns - LOOKBACK_NS
            samples, energy = self._store.arrays(since)
            tallies = tallies_of(samples, self.gpus, t_start_ns, t_end_ns)
            measurement = self._measurement(
                name, t_start_ns, t_end_ns, samples, energy, tallies, self._store.driver_power(since)
            )
            self._remember(measurement)
        return measurement

    # -- records -----------------------------------------------------------------------------------------

    @property
    def kept_samples(self) -> int:
        """Samples held now, for open windows and the history (the memory the monitor uses: 40 B each)."""
        with self._lock:
            return self._store.kept_samples

    def stats(self) -> SamplerStats:
        """How the sampler has run so far: rate achieved, deadline misses, losses, its CPU time."""
        return self._sampler.stats()

    def _drain_locked(self) -> None:
        with self._lock:
            if not self.closed:
                self._drain()

    def _drain(self) -> None:
        """Move the sampler's new records into the store and the windows' tallies (holding the lock)."""
        samples, energy = self._sampler.drain()
        self._store.append(samples, energy, self._sampler.drain_driver_power())
        active = [*self._open.values(), *self._unlisted]
        for window in active:
            for tally in window.tallies:
                tally.add(samples)
        self._store.trim(time.monotonic_ns(), (w.t_start_ns for w in active))

    def _await_counter(self, after_ns: int, driver: bool = True) -> None:
        """Drain until each GPU's energy counter has updated after ``after_ns`` and, with ``driver``, where
        the driver keeps power samples, they cover the update period after it; COUNTER_WAIT_S at most."""
        deadline = time.monotonic() + COUNTER_WAIT_S
        while True:
            with self._lock:
                if self.closed:
                    return
                self._drain()
                recent = self._store.energy_since(after_ns - RECENT_NS)
                driven = self._store.driver_power(after_ns)
            updated = [counter_updates(recent, gpu)[0] for gpu in self.gpus]
            timed = all(t.size and float(t[-1]) > after_ns for t in updated)
            covered = all(
                not (driver and kept)
                or bool(np.any(driven["t_ns"][driven["gpu"] == gpu] >= after_ns + DRIVER_COVER_NS))
                for gpu, kept in self._driver_kept.items()
            )
            if (timed and covered) or time.monotonic() >= deadline:
                return
            time.sleep(POLL_S)

    def _measurement(
        self,
        name: str,
        t0: int,
        t1: int,
        samples: np.ndarray,
        energy: np.ndarray,
        tallies: list[WindowTally],
        driver_power: np.ndarray,
    ) -> Measurement:
        return Measurement(
            name=name,
            t_start_ns=t0,
            t_end_ns=t1,
            duration_s=(t1 - t0) / 1e9,
            simulated=self.simulated,
            gpus={
                tally.gpu: gpu_measurement(samples, energy, tally, t0, t1, driver_power, self.simulated)
                for tally in tallies
            },
        )

    def _remember(self, measurement: Measurement) -> None:
        self._last[measurement.name] = measurement
        self._last.move_to_end(measurement.name)
        while len(self._last) > LAST_KEPT:
            self._last.popitem(last=False)

    # -- life --------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return not self._closer.alive

    def _check_open(self) -> None:
        if self.closed:
            raise UsageError("this Monitor is closed: open a new one to measure")

    def close(self) -> None:
        """Stop the sampler and forget open windows; closing twice is fine."""
        with self._lock:
            self._closer()
            self._open.clear()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._open)} open windows"
        label = "SIMULATED GPU" if self.simulated else "GPU"
        return f"<gpuprof.Monitor {label} {list(self.gpus)}, {state}>"
