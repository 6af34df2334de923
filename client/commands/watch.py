"""``gpuprof watch``: live power and SM clock of a GPU in the terminal, with the job running on it."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from types import TracebackType
from typing import Any

import click

from ..api import Client
from ..live import LiveWindow, header_lines, render_live, stale_note, watch_loop
from .common import endpoint_option


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

    def __call__(self, window: LiveWindow, now_s: float) -> None:
        if not self.interactive:
            if now_s - self._last_line_s >= 1.0:  # a log, not an animation
                self._last_line_s = now_s
                click.echo(
                    " | ".join(header_lines(window, now_s)) + " " + stale_note(window, now_s).rstrip(" ·")
                )
            return
        size = shutil.get_terminal_size()
        frame = render_live(window, size.columns, size.lines - 1, now_s)
        if self._live is not None:
            from rich.text import Text

            text = Text(frame, no_wrap=True, overflow="crop")
            text.highlight_words(["SIMULATED", "STALE"], style="bold magenta")
            self._live.update(text, refresh=True)
        else:
            click.echo("\x1b[H" + frame.replace("\n", "\x1b[K\n") + "\x1b[J", nl=False)


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


@click.command()
@click.option("--gpu", type=int, help="GPU index to watch. Default: the job's GPU with --job, else 0.")
@click.option("--job", "job_id", help="Watch the GPU this job runs on, and follow its state and phases.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), help="Stop after S seconds.")
@endpoint_option
def watch(gpu: int | None, job_id: str | None, seconds: float | None, endpoint: str) -> None:
    """Plot a GPU's power and SM clock live, over the last 30 s, with the job running on it.

    The plot starts with the daemon's recent history and redraws up to 10 times a second from its live
    stream (the sensor updates about every 100 ms). Samples from gpuprof's simulated GPU are labelled
    SIMULATED. Ctrl-C quits.

    \b
    Examples:
      gpuprof watch
      gpuprof watch --job 01m97091dk4s            any unique start of the job's id
      gpuprof watch --gpu 1 --seconds 60 > power.log     one status line per second when piped
    """
    with Client(endpoint) as client:
        window = prepare_window(client, gpu, job_id)
        with (
            client.stream(gpu=window.gpu, job=window.watched_job) as subscription,
            Screen() as screen,
            contextlib.suppress(KeyboardInterrupt),  # Ctrl-C is how watch ends
        ):
            # Subscribed first, then the history: the overlap is dropped by time, and nothing falls between.
            if "history" in client.hello().get("capabilities", []):
                recent = client.history(int(window.gpu or 0), seconds=window.window_s, max_points=4000)
                window.apply({**recent, "kind": "samples"}, time.monotonic())
            watch_loop(subscription, window, screen, seconds=seconds)
