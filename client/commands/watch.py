"""``gpuprof watch``: live power and SM clock of a GPU in the terminal, with the job running on it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import click

from gpuprof.client.wire.errors import UsageError
from gpuprof.client.wire.states import FINAL_STATES

from ..api import Client
from ..live import (
    STALE_AFTER_S,
    LiveWindow,
    NodeWindows,
    gpu_line,
    header_lines,
    render_live,
    render_node,
    stale_note,
    watch_loop,
)
from .common import endpoint_option, json_option


class Screen:
    """Draws watch frames: with rich on a terminal, with ANSI codes without it, as status lines when piped."""

    def __init__(self) -> None:
        self.interactive = sys.stdout.isatty()
        self._live: Any = None
        self._last_line_s = -1.0
        if self.interactive:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                pass
            else:
                self._live = Live(auto_refresh=False, console=Console(), redirect_stderr=False)

    def __enter__(self) -> Screen:
        if self._live is not None:
            self._live.__enter__()
        elif self.interactive:
            click.echo("\x1b[2J", nl=False)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, exc, tb)
        elif self.interactive:
            click.echo("")

    def last(self, view: LiveWindow | NodeWindows, now_s: float) -> None:
        """The last frame (a watched job has ended): drawn, or printed when piped, however soon after
        the one before."""
        self._last_line_s = -1.0
        self(view, now_s)

    def __call__(self, view: LiveWindow | NodeWindows, now_s: float) -> None:
        if not self.interactive:
            if now_s - self._last_line_s >= 1.0:  # a log, not an animation
                self._last_line_s = now_s
                click.echo(status_lines(view, now_s))
            return
        size = shutil.get_terminal_size()
        if isinstance(view, NodeWindows):
            frame = render_node(view, size.columns, size.lines - 1, now_s)
        else:
            frame = render_live(view, size.columns, size.lines - 1, now_s)
        if self._live is not None:
            from rich.text import Text

            text = Text(frame, no_wrap=True, overflow="crop")
            text.highlight_words(["SIMULATED", "STALE"], style="bold magenta")
            self._live.update(text, refresh=True)
        else:
            click.echo("\x1b[H" + frame.replace("\n", "\x1b[K\n") + "\x1b[J", nl=False)


def status_lines(view: LiveWindow | NodeWindows, now_s: float) -> str:
    """What a piped watch prints each second: one line, or one per GPU with --all."""
    if isinstance(view, NodeWindows):
        source = "SIMULATED · " if any(w.simulated for w in view.windows.values()) else ""
        return "\n".join(source + gpu_line(view.windows[g], now_s) for g in sorted(view.windows))
    return " | ".join(header_lines(view, now_s)) + " " + stale_note(view, now_s).rstrip(" ·")


class JsonLines:
    """``watch --json``: each second, one JSON object per GPU watched, on its own line."""

    def __init__(self) -> None:
        self._last_s = -1.0

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def last(self, view: LiveWindow | NodeWindows, now_s: float) -> None:
        """The last lines (a watched job has ended), however soon after the ones before."""
        self._last_s = -1.0
        self(view, now_s)

    def __call__(self, view: LiveWindow | NodeWindows, now_s: float) -> None:
        if now_s - self._last_s < 1.0:
            return
        self._last_s = now_s
        windows = [view.windows[g] for g in sorted(view.windows)] if isinstance(view, NodeWindows) else [view]
        for window in windows:
            click.echo(json.dumps(window_json(window, now_s)))
        sys.stdout.flush()


def _mean_last(values: Any, t_ns: Any, seconds: float) -> float | None:
    import numpy as np

    if not t_ns.size:
        return None
    recent = values[t_ns >= t_ns[-1] - int(seconds * 1e9)]
    recent = recent[~np.isnan(recent)]
    return float(recent.mean()) if recent.size else None


def window_json(window: LiveWindow, now_s: float) -> dict[str, Any]:
    """One GPU's readings now: the last sample and the last second's means, its job and phase."""
    import numpy as np

    def last(values: Any) -> float | None:
        kept = values[~np.isnan(values)]
        return float(kept[-1]) if kept.size else None

    stale = window.received_s is not None and now_s - window.received_s > STALE_AFTER_S
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "gpu": window.gpu,
        "gpu_name": window.gpu_name,
        "simulated": window.simulated,
        "power_w": last(window.power_w),
        "power_w_mean_1s": _mean_last(window.power_w, window.t_ns, 1.0),
        "sm_clock_mhz": last(window.sm_clock_mhz),
        "util_pct": window.util_pct,
        "temp_c": window.temp_c,
        "samples_1s": int((window.t_ns >= window.t_ns[-1] - 1_000_000_000).sum()) if window.t_ns.size else 0,
        "job": window.job_id,
        "job_state": window.job_state,
        "phase": window.phase,
        "stale": stale,
    }


def prepare_window(client: Client, gpu: int | None, job_id: str | None) -> LiveWindow:
    """A LiveWindow for the GPU watched (the job's, with --job), with its name and plot scales."""
    window = LiveWindow(gpu=gpu, watched_job=job_id)
    if job_id is not None:
        job = client.job(job_id)
        job_id = window.watched_job = str(job["id"])  # a prefix given, the whole id from here on
        window.gpu = int(job["gpu"]) if gpu is None else gpu
        window.job_id, window.job_state, window.job_name = job_id, job.get("state"), job.get("name")
    if window.gpu is None:
        window.gpu = 0
    for info in client.gpus():
        if info.index == window.gpu:
            clocks = info.graphics_clocks_mhz
            window.gpu_name, window.simulated = info.name, info.simulated
            window.power_limit_w = info.max_power_limit_w or info.power_limit_w
            window.max_sm_clock_mhz = max(clocks) if clocks else None
    return window


def prepare_node(client: Client) -> NodeWindows:
    """A NodeWindows with a window for each of the daemon's GPUs, named and scaled."""
    node = NodeWindows()
    for info in client.gpus():
        window = node.window(info.index)
        clocks = info.graphics_clocks_mhz
        window.gpu_name, window.simulated = info.name, info.simulated
        window.power_limit_w = info.max_power_limit_w or info.power_limit_w
        window.max_sm_clock_mhz = max(clocks) if clocks else None
    return node


def _job_ended(window: LiveWindow) -> Callable[[], bool]:
    """Whether the job ``window`` watches has reached a final state (its state comes with the stream)."""
    return lambda: window.job_state in FINAL_STATES


@click.command()
@click.option("--gpu", type=int, help="GPU index to watch. Default: the job's GPU with --job, else 0.")
@click.option(
    "--job", "job_id",
    help="Watch the GPU this job runs on, follow its state and phases, and stop when it ends.",
)  # fmt: skip
@click.option("--all", "all_gpus", is_flag=True, help="Every GPU of the node at once, a power plot each.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), help="Stop after S seconds.")
@json_option
@endpoint_option
def watch(
    gpu: int | None, job_id: str | None, all_gpus: bool, seconds: float | None, as_json: bool, endpoint: str
) -> None:
    """Plot a GPU's power and SM clock live, over the last 30 s, with the job running on it.

    The plot starts with the daemon's recent history and redraws up to 10 times a second from its live
    stream (the sensor updates about every 100 ms). With --all, every GPU of the node is drawn at once,
    each with its readings, its job and phase above its power plot (a line per GPU where the terminal is
    short). Samples from gpuprof's simulated GPU are labelled SIMULATED. Ctrl-C quits; with --job, watch
    also stops once the job has ended, on a last frame (or line) that shows its final state.

    When piped, watch prints a status line each second (one per GPU with --all); with --json, one JSON
    object per GPU each second, on its own line: time (UTC), gpu, gpu_name, simulated, power_w (the last
    reading), power_w_mean_1s, sm_clock_mhz, util_pct, temp_c, samples_1s, job, job_state, phase and
    stale (no samples for over 2 s).

    \b
    Examples:
      gpuprof watch
      gpuprof watch --all                          every GPU of the node, like nvitop
      gpuprof watch --job 01m97091dk4s            any unique start of the job's id
      gpuprof watch --gpu 1 --seconds 60 > power.log     one status line per second when piped
      gpuprof watch --all --json --seconds 10 | jq -c '[.gpu, .power_w]'
    """
    if all_gpus and (gpu is not None or job_id is not None):
        raise UsageError("--all watches every GPU: leave out --gpu and --job")
    with Client(endpoint) as client:
        view: LiveWindow | NodeWindows
        if all_gpus:
            view = prepare_node(client)
            subscription = client.stream()
        else:
            view = prepare_window(client, gpu, job_id)
            subscription = client.stream(gpu=view.gpu, job=view.watched_job)
        draw = JsonLines() if as_json else Screen()
        with subscription, draw, contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how watch ends
            # Subscribed first, then the history: the overlap is dropped by time, and nothing falls between.
            if "history" in client.hello().get("capabilities", []):
                windows = list(view.windows.values()) if isinstance(view, NodeWindows) else [view]
                for window in windows:
                    recent = client.history(int(window.gpu or 0), seconds=window.window_s, max_points=4000)
                    window.apply({**recent, "kind": "samples"}, time.monotonic())
            ended = _job_ended(view) if isinstance(view, LiveWindow) and view.watched_job else None
            watch_loop(subscription, view, draw, seconds=seconds, done=ended)
            if ended is not None and ended():
                draw.last(view, time.monotonic())  # the job's final state, whatever the frame rate
