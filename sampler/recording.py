"""Running a sampler for a while and collecting what it records into a Trace."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .backend import Sampler, SamplerStats
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
    progress: Callable[[Trace, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Recording:
    """Sample for ``seconds`` (None: until Ctrl-C or SIGTERM); Ctrl-C keeps what was recorded so far."""
    trace = Trace(
        monotonic_anchor_ns=time.monotonic_ns(),
        wall_anchor_ns=time.time_ns(),
        simulated=sampler.simulated,
        metadata={"library": sampler.library_path, "rate_hz": sampler.config.rate_hz},
    )
    interrupted = False
    started = clock()
    with _sigterm_as_interrupt():
        try:
            sampler.start()
            while seconds is None or clock() - started < seconds:
                left = DRAIN_INTERVAL_S if seconds is None else seconds - (clock() - started)
                sleep(max(0.0, min(DRAIN_INTERVAL_S, left)))
                trace.extend(*sampler.drain())
                if progress is not None:
                    progress(trace, clock() - started)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sampler.stop()
            trace.extend(*sampler.drain())
    stats = sampler.stats()
    trace.metadata["stats"] = stats.as_dict()
    trace.metadata["interrupted"] = interrupted
    return Recording(trace=trace, stats=stats, interrupted=interrupted)
