"""``gpuprof watch``'s model and view: a bounded window of live samples, and a pure text rendering of it.

``render_live(window, width, height, now_s)`` depends on nothing else, so tests take fixed-size snapshots
of fake windows; ``watch_loop`` drives it from any reader with ``poll(timeout_s)``, on an injected clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .formats import number

WINDOW_S = 30.0
MAX_REDRAW_HZ = 10.0
MAX_WINDOW_SAMPLES = 400_000  # 30 s at ~13 kHz: a bound on memory whatever the sampler's rate
STALE_AFTER_S = 2.0
BLOCKS = " ▁▂▃▄▅▆▇█"  # eighths of a cell, for an area plot with 8 levels per row
GUTTER = 8  # width of the y-axis labels and the axis line
LIVE_SERIES = ("t_ns", "power_w", "sm_clock_mhz", "util_pct", "temp_c")


@dataclass
class LiveWindow:
    """The last ``window_s`` of one GPU's samples, and what is known about the job running on it."""

    gpu: int | None = None  # None: take the first GPU seen
    window_s: float = WINDOW_S
    gpu_name: str | None = None
    simulated: bool | None = None
    power_limit_w: float | None = None
    max_sm_clock_mhz: float | None = None
    job_id: str | None = None  # the job running on the GPU, or the one watched (--job)
    job_state: str | None = None
    job_name: str | None = None
    watched_job: str | None = None
    phase: str | None = None
    util_pct: float | None = None
    temp_c: float | None = None
    received_s: float | None = None  # local clock of the last batch, to tell a stalled stream
    t_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    power_w: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    sm_clock_mhz: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    def apply(self, message: dict[str, Any], now_s: float) -> None:
        """Take in one live message (client/stream.py's dicts)."""
        kind = message.get("kind")
        if kind == "samples":
            self._add_samples(message, now_s)
        elif kind == "job" and isinstance(message.get("job"), dict):
            job = message["job"]
            if self.watched_job is None or job.get("id") == self.watched_job:
                self.job_id, self.job_state, self.job_name = job.get("id"), job.get("state"), job.get("name")
        elif kind == "marker":
            marker, name = message.get("marker"), message.get("name")
            self.phase = None if marker == "end" and name == self.phase else str(name)

    def _add_samples(self, batch: dict[str, Any], now_s: float) -> None:
        if self.gpu is None:
            self.gpu = batch.get("gpu")
        if batch.get("gpu") != self.gpu:
            return
        self.received_s = now_s
        self.simulated = bool(batch.get("simulated"))
        running = batch.get("job")
        if self.watched_job is None:
            if running != self.job_id:
                self.phase = None
            self.job_id, self.job_state = running, "running" if running else None
        elif running == self.watched_job and self.job_state in (None, "queued"):
            self.job_state = "running"
        t_ns = np.asarray(batch.get("t_ns") or [], dtype=np.int64)
        fresh = t_ns > self.t_ns[-1] if self.t_ns.size else np.ones(t_ns.size, bool)
        if not fresh.all():  # already seen: the history fetched at start overlaps the first live batches
            batch = {k: _selected(batch.get(k), fresh) for k in LIVE_SERIES}
            t_ns = t_ns[fresh]
        if not t_ns.size:
            return
        self.util_pct = _last(batch.get("util_pct"))
        self.temp_c = _last(batch.get("temp_c"))
        self.t_ns = np.concatenate([self.t_ns, t_ns])
        self.power_w = np.concatenate([self.power_w, _floats(batch.get("power_w"), t_ns.size)])
        self.sm_clock_mhz = np.concatenate([self.sm_clock_mhz, _floats(batch.get("sm_clock_mhz"), t_ns.size)])
        keep = max(
            int(np.searchsorted(self.t_ns, self.t_ns[-1] - int(self.window_s * 1e9))),
            self.t_ns.size - MAX_WINDOW_SAMPLES,
        )
        if keep > 0:
            self.t_ns, self.power_w, self.sm_clock_mhz = (
                self.t_ns[keep:],
                self.power_w[keep:],
                self.sm_clock_mhz[keep:],
            )


def _floats(values: Any, size: int) -> np.ndarray:
    """A float column with nil as NaN (a missing reading is never a zero)."""
    if not isinstance(values, list) or len(values) != size:
        return np.full(size, np.nan)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _selected(values: Any, keep: np.ndarray) -> Any:
    """The kept entries of a column; a column of the wrong shape is left for ``_floats`` to refuse."""
    if not isinstance(values, list) or len(values) != keep.size:
        return values
    return [v for v, kept in zip(values, keep.tolist(), strict=True) if kept]


def _last(values: Any) -> float | None:
    if not isinstance(values, list):
        return None
    return next((float(v) for v in reversed(values) if v is not None), None)


def bucket_means(
    t_ns: np.ndarray, values: np.ndarray, t_end_ns: int, window_ns: int, width: int
) -> np.ndarray:
    """Mean of ``values`` in ``width`` equal time buckets ending at ``t_end_ns``.

    An empty bucket holds the value before it (the sensor's reading stands until the next one); buckets
    before the first sample are NaN (nothing to show, not zero).
    """
    out = np.full(width, np.nan)
    start = t_end_ns - window_ns
    keep = (t_ns >= start) & (t_ns <= t_end_ns) & ~np.isnan(values)
    if width <= 0 or not keep.any():
        return out
    index = np.minimum((t_ns[keep] - start) * width // window_ns, width - 1).astype(np.int64)
    sums = np.bincount(index, weights=values[keep], minlength=width)
    counts = np.bincount(index, minlength=width)
    filled = counts > 0
    out[filled] = sums[filled] / counts[filled]
    last = np.nan
    for i in range(int(index.min()), width):
        last = out[i] = out[i] if filled[i] else last
    return out


def _nice_ceiling(value: float, step: float) -> float:
    return max(step, math.ceil(value / step) * step)


def plot_rows(columns: np.ndarray, top: float, height: int) -> list[str]:
    """An area plot of ``columns`` scaled to [0, top], ``height`` rows from top to bottom."""
    eighths = np.where(np.isnan(columns), 0, np.clip(columns / top, 0, 1) * height * 8).round().astype(int)
    rows = []
    for row in range(height):
        floor = (height - 1 - row) * 8
        rows.append("".join(BLOCKS[min(8, max(0, e - floor))] for e in eighths))
    return rows


def _panel(title: str | None, rows: list[str], top: float) -> list[str]:
    """The plot's rows behind a y axis whose ticks (``┤``) mark the top, the middle row's top edge and 0."""
    lines = [title] if title is not None else []
    height = len(rows)
    ticks = {0: top, height - 1: 0.0}
    if height >= 4:
        ticks[height // 2] = top * (height - height // 2) / height  # that row's top edge
    for i, row in enumerate(rows):
        value = ticks.get(i)
        label = "" if value is None else f"{value:,.0f}"
        lines.append(f"{label:>{GUTTER - 2}} {'│' if value is None else '┤'}{row}")
    return lines


def _tick_step(window_s: float, width: int) -> float:
    """The time between x-axis ticks: the shortest nice step that leaves room for a label between ticks."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if step / window_s * width >= 8 and window_s / step <= 8:
            return float(step)
    return window_s


def time_axis(window_s: float, width: int) -> list[str]:
    """Two lines under a plot ``width`` columns wide that ends now: the axis with its ticks, their labels."""
    if width < 10:
        return []
    step = _tick_step(window_s, width)
    axis, labels = ["─"] * width, [" "] * width
    ago = 0.0
    while ago <= window_s + 1e-9:
        column = round((1 - ago / window_s) * (width - 1))
        axis[column] = "┬"
        text = "now" if ago == 0 else f"-{ago:g} s"
        start = min(max(0, column - len(text) // 2), width - len(text))
        if all(c == " " for c in labels[max(0, start - 1) : start + len(text) + 1]):
            labels[start : start + len(text)] = text
        ago += step
    return [" " * (GUTTER - 1) + "└" + "".join(axis), " " * GUTTER + "".join(labels).rstrip()]


def _fmt(value: float | None, unit: str, digits: int = 0) -> str:
    return number(value, unit, digits, grouped=False)


def header_lines(window: LiveWindow, now_s: float | None) -> list[str]:
    """The title, job and readout lines."""
    source = {None: "waiting for samples", True: "SIMULATED", False: "NVIDIA driver"}[window.simulated]
    gpu = "?" if window.gpu is None else str(window.gpu)
    name = f" · {window.gpu_name}" if window.gpu_name else ""
    if window.job_id:
        label = f" ({window.job_name})" if window.job_name else ""
        job = f"job {window.job_id}{label} {window.job_state or 'running'}"
        job += f" · phase {window.phase}" if window.phase else ""
    else:
        job = "no job running"
    power = _last([None if math.isnan(v) else v for v in window.power_w[-256:].tolist()])
    clock = _last([None if math.isnan(v) else v for v in window.sm_clock_mhz[-256:].tolist()])
    readout = (
        f"power {_fmt(power, 'W', 1)} · SM {_fmt(clock, 'MHz')} · util {_fmt(window.util_pct, '%')} · "
        f"temp {_fmt(window.temp_c, 'C')}"
    )
    return [f"GPU {gpu} · {source}{name} · gpuprof watch", job, readout]  # what matters most first


def stale_note(window: LiveWindow, now_s: float | None) -> str:
    """'STALE: ...' when no samples came for a while (a stopped daemon or stream), else ''."""
    if now_s is None or window.received_s is None or now_s - window.received_s <= STALE_AFTER_S:
        return ""
    return f"STALE: no samples for {now_s - window.received_s:.0f} s · "


def _plot_data(window: LiveWindow, width: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Bucketed power and SM clock for ``width`` columns, and their axes' tops."""
    window_ns = int(window.window_s * 1e9)
    t_end = int(window.t_ns[-1]) if window.t_ns.size else 0
    power = bucket_means(window.t_ns, window.power_w, t_end, window_ns, width)
    clock = bucket_means(window.t_ns, window.sm_clock_mhz, t_end, window_ns, width)
    power_top = _nice_ceiling(max(window.power_limit_w or 0, np.nanmax(power, initial=0)), 50)
    clock_top = _nice_ceiling(max(window.max_sm_clock_mhz or 0, np.nanmax(clock, initial=0)), 100)
    return power, clock, power_top, clock_top


def _footer(window: LiveWindow, now_s: float | None) -> str:
    return f"{stale_note(window, now_s)}{window.t_ns.size:,} samples · Ctrl-C quits"


def render_live(window: LiveWindow, width: int, height: int, now_s: float | None = None) -> str:
    """The watch screen for a ``width`` x ``height`` terminal: at most that many lines and columns."""
    lines = header_lines(window, now_s)
    plot_height = height - len(lines) - 5  # two panel titles, the time axis and its labels, the footer
    plot_width = width - GUTTER
    if plot_height >= 2 and plot_width >= 10:
        power, clock, power_top, clock_top = _plot_data(window, plot_width)
        power_rows, clock_rows = (plot_height + 1) // 2, plot_height // 2
        lines += _panel("power (W)", plot_rows(power, power_top, power_rows), power_top)
        lines += _panel("SM clock (MHz)", plot_rows(clock, clock_top, clock_rows), clock_top)
        lines += time_axis(window.window_s, plot_width)
    lines.append(_footer(window, now_s))
    return "\n".join(line[:width] for line in lines[:height])


def gpu_line(window: LiveWindow, now_s: float | None) -> str:
    """One GPU in one line: index, name, readings, its job and phase (``watch --all``)."""
    power = _last([None if math.isnan(v) else v for v in window.power_w[-256:].tolist()])
    clock = _last([None if math.isnan(v) else v for v in window.sm_clock_mhz[-256:].tolist()])
    name = f" {window.gpu_name}" if window.gpu_name else ""
    job = "no job"
    if window.job_id:
        job = f"job {window.job_id}" + (f" ({window.job_name})" if window.job_name else "")
        job += f" · {window.phase}" if window.phase else ""
    return (
        f"GPU {window.gpu}{name} · {_fmt(power, 'W')} · SM {_fmt(clock, 'MHz')} · "
        f"util {_fmt(window.util_pct, '%')} · {_fmt(window.temp_c, 'C')} · {job}"
        + (f" · {stale_note(window, now_s).rstrip(' ·')}" if stale_note(window, now_s) else "")
    )


@dataclass
class NodeWindows:
    """Every GPU of a node, one LiveWindow each (``watch --all``): messages go to their GPU's window."""

    windows: dict[int, LiveWindow] = field(default_factory=dict)
    window_s: float = WINDOW_S

    def window(self, gpu: int) -> LiveWindow:
        if gpu not in self.windows:
            self.windows[gpu] = LiveWindow(gpu=gpu, window_s=self.window_s)
        return self.windows[gpu]

    def apply(self, message: dict[str, Any], now_s: float) -> None:
        kind = message.get("kind")
        if kind == "samples" and isinstance(message.get("gpu"), int):
            self.window(message["gpu"]).apply(message, now_s)
        elif kind == "job" and isinstance(message.get("job"), dict):
            gpu = message["job"].get("gpu")
            if (
                isinstance(gpu, int)
                and gpu in self.windows
                and self.windows[gpu].job_id == message["job"].get("id")
            ):
                self.windows[gpu].apply(message, now_s)
        elif kind == "marker":
            job_id = str(message.get("topic", "")).removeprefix("job/")
            for window in self.windows.values():
                if window.job_id == job_id:
                    window.apply(message, now_s)


def render_node(node: NodeWindows, width: int, height: int, now_s: float | None = None) -> str:
    """Every GPU's power over the last ``window_s``, stacked; each GPU's readings and job above its plot.

    Where the terminal is too short for a plot per GPU, one line per GPU."""
    windows = [node.windows[g] for g in sorted(node.windows)]
    simulated = any(w.simulated for w in windows)
    source = "SIMULATED" if simulated else ("NVIDIA driver" if windows else "waiting for samples")
    lines = [
        f"gpuprof watch --all · {len(windows)} GPU{'s' if len(windows) != 1 else ''} · {source} · power (W)"
    ]
    plot_width = width - GUTTER
    rows = (height - 4) // max(1, len(windows)) - 1  # the title, the axis and its labels, the footer
    for window in windows:
        lines.append(gpu_line(window, now_s))
        if rows >= 1 and plot_width >= 10:
            power, _, power_top, _ = _plot_data(window, plot_width)
            lines += _panel(None, plot_rows(power, power_top, rows), power_top)
    if rows >= 1 and plot_width >= 10 and windows:
        lines += time_axis(node.window_s, plot_width)
    lines.append("Ctrl-C quits")
    return "\n".join(line[:width] for line in lines[:height])


class MessageReader(Protocol):
    """Where watch reads live messages from (a Subscription, or a fake in tests)."""

    def poll(self, timeout_s: float) -> list[dict[str, Any]]: ...


def watch_loop(
    reader: MessageReader,
    window: LiveWindow | NodeWindows,
    draw: Callable[[Any, float], None],
    seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_redraw_hz: float = MAX_REDRAW_HZ,
    done: Callable[[], bool] | None = None,
) -> int:
    """Read messages into ``window``, redrawing at most ``max_redraw_hz`` times a second; returns the frames.

    Runs for ``seconds`` (None: until interrupted), or until ``done()`` (a watched job has ended).
    Messages are read between frames, so a burst of samples costs one redraw, not one per batch.
    """
    start = clock()
    next_draw = start
    frames = 0
    while True:
        now = clock()
        if seconds is not None and now - start >= seconds:
            return frames
        if done is not None and done():
            return frames
        if now >= next_draw:
            draw(window, now)
            frames += 1
            next_draw = now + 1.0 / max_redraw_hz
        timeout = next_draw - now
        if seconds is not None:
            timeout = min(timeout, start + seconds - now)
        for message in reader.poll(max(0.0, timeout)):
            window.apply(message, clock())
