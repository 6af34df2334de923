"""Running a sampler for a while and collecting what it records into a Trace."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .backend import Sampler, SamplerStats
from .records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, SAMPLE_DTYPE, concat
from .trace import Trace

DRAIN_INTERVAL_S = 0.2


@dataclass
class Recording:
    """A finished recording: the trace, the sampler's statistics and whether it was cut short."""

    trace: Trace
    stats: SamplerStats
    interrupted: bool


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while recording, so a killed run still writes what it has."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def record(
    sampler: Sampler,
    seconds: float | None,
    progress: Callable[[np.ndarray, int, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Recording:
    """Sample for ``seconds`` (None: until Ctrl-C or SIGTERM); Ctrl-C keeps what was recorded so far.

    ``progress(latest_batch, samples_so_far, elapsed_s)`` is called after every drain.
    """
    trace = Trace(
        monotonic_anchor_ns=time.monotonic_ns(),
        wall_anchor_ns=time.time_ns(),
        simulated=sampler.simulated,
        metadata={"library": sampler.library_path, "rate_hz": sampler.config.rate_hz},
    )
    interrupted = False
    batches: list[np.ndarray] = []
    readings: list[np.ndarray] = []
    driver_power: list[np.ndarray] = []
    count = 0

    def take() -> np.ndarray:
        nonlocal count
        samples, energy = sampler.drain()
        batches.append(samples)
        readings.append(energy)
        driver_power.append(sampler.drain_driver_power())
        count += samples.size
        return samples

    started = clock()
    with _sigterm_as_interrupt():
        try:
            sampler.start()
            while seconds is None or clock() - started < seconds:
                left = DRAIN_INTERVAL_S if seconds is None else seconds - (clock() - started)
                sleep(max(0.0, min(DRAIN_INTERVAL_S, left)))
                latest = take()
                if progress is not None:
                    progress(latest, count, clock() - started)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sampler.stop()
            take()
    # joined once: appending to one growing array every drain would be quadratic in the recording's length
    trace.samples = concat(batches, SAMPLE_DTYPE)
    trace.energy = concat(readings, ENERGY_DTYPE)
    trace.driver_power = concat(driver_power, DRIVER_POWER_DTYPE)
    stats = sampler.stats()
    trace.metadata["stats"] = stats.as_dict()
    trace.metadata["interrupted"] = interrupted
    return Recording(trace=trace, stats=stats, interrupted=interrupted)
