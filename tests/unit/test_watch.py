"""gpuprof watch's view: fixed-size snapshots of fake sample windows; the redraw loop on a fake clock."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gpuprof.client.live import (
    GUTTER,
    MAX_REDRAW_HZ,
    LiveWindow,
    NodeWindows,
    bucket_means,
    render_live,
    render_node,
    time_axis,
    watch_loop,
)

T0 = 1_000_000_000_000
BATCH = 100  # samples per 100 ms batch: a 1 kHz sampler


def batch(
    b: int, power: float | None, clock: int | None, job: str | None = "3f2a9c", gpu: int = 0
) -> dict[str, Any]:
    t_ns = [T0 + (b * BATCH + i) * 1_000_000 for i in range(BATCH)]
    return {
        "kind": "samples",
        "topic": f"gpu/{gpu}",
        "gpu": gpu,
        "simulated": True,
        "job": job,
        "t_ns": t_ns,
        "power_w": [power] * BATCH,
        "sm_clock_mhz": [clock] * BATCH,
        "util_pct": [90] * BATCH,
        "temp_c": [55] * BATCH,
    }


def busy_window() -> LiveWindow:
    """20 s of a GPU alternating 4 s idle and 4 s busy; the job starts after the first 4 s."""
    window = LiveWindow(gpu=0, gpu_name="NVIDIA H100 80GB HBM3", power_limit_w=700, max_sm_clock_mhz=1980)
    for b in range(200):
        high = (b // 40) % 2 == 1
        window.apply(
            batch(b, 600.0 if high else 100.0, 1980 if high else 345, "3f2a9c" if b >= 40 else None), 10.0
        )
    return window


BUSY_48x16 = """\
GPU 0 · SIMULATED · NVIDIA H100 80GB HBM3 · gpup
job 3f2a9c running
power 100.0 W · SM 345 MHz · util 90 % · temp 55
power (W)
   700 ┤                   ▃▃▃▃▃      ▃▃▃▃
       │                   █████     ▄████▄
   350 ┤                  ▄█████     ██████
     0 ┤             ▅▅▅▅▅██████▅▅▅▅▅██████▅▅▅▅▅
SM clock (MHz)
 2,000 ┤                   █████      ████
       │                   █████     ▇████▇
 1,000 ┤                  ▆█████     ██████
     0 ┤             ▆▆▆▆▆██████▆▆▆▆▆██████▆▆▆▆▆
       └┬────────────┬────────────┬────────────┬
        -30 s      -20 s        -10 s        now
20,000 samples · Ctrl-C quits"""

EMPTY_40x13 = """\
GPU ? · waiting for samples · gpuprof wa
no job running
power n/a · SM n/a · util n/a · temp n/a
power (W)
    50 ┤
       │
     0 ┤
SM clock (MHz)
   100 ┤
     0 ┤
       └┬─────────┬──────────┬─────────┬
        -30 s   -20 s      -10 s     now
0 samples · Ctrl-C quits"""


def snapshot(frame: str) -> str:
    """The frame without the blanks that pad its lines (the snapshots above have none)."""
    return "\n".join(line.rstrip() for line in frame.split("\n"))


def test_snapshot_of_a_busy_simulated_gpu() -> None:
    assert snapshot(render_live(busy_window(), 48, 16, now_s=10.0)) == BUSY_48x16


def test_snapshot_before_any_sample() -> None:
    assert snapshot(render_live(LiveWindow(), 40, 13)) == EMPTY_40x13


@pytest.mark.parametrize("width", [1, 10, 20, 30, 47, 80, 200])
@pytest.mark.parametrize("height", [1, 3, 5, 8, 9, 24, 60])
def test_any_terminal_size_fits_without_crashing(width: int, height: int) -> None:
    for window in (busy_window(), LiveWindow()):
        lines = render_live(window, width, height, now_s=10.0).split("\n")
        assert len(lines) <= height
        assert all(len(line) <= width for line in lines)


def test_large_terminal_shows_label_job_and_both_panels() -> None:
    frame = render_live(busy_window(), 120, 40, now_s=10.0)
    assert frame.count("\n") == 39
    first, second = frame.split("\n")[:2]
    assert "SIMULATED" in first and "3f2a9c" in second
    assert "power (W)" in frame and "SM clock (MHz)" in frame


def test_real_gpu_is_not_labelled_simulated_and_missing_readings_are_not_zero() -> None:
    window = LiveWindow(gpu=0)
    window.apply({**batch(0, None, None), "simulated": False}, 0.0)
    frame = render_live(window, 60, 16)
    assert "SIMULATED" not in frame and "NVIDIA driver" in frame
    assert "power n/a" in frame and "█" not in frame


def test_stale_stream_is_flagged() -> None:
    window = busy_window()  # last batch received at 10.0
    assert "STALE" not in render_live(window, 80, 20, now_s=11.0)
    assert "STALE: no samples for 5 s" in render_live(window, 80, 20, now_s=15.0)


def test_window_keeps_only_the_last_30_seconds() -> None:
    window = LiveWindow(gpu=0)
    for b in range(600):  # 60 s
        window.apply(batch(b, 300.0, 1500), 0.0)
    span_s = (window.t_ns[-1] - window.t_ns[0]) / 1e9
    assert 29.9 <= span_s <= 30.0
    assert window.t_ns.size == window.power_w.size == window.sm_clock_mhz.size <= 30_001


def test_history_then_overlapping_live_batches_keep_each_sample_once() -> None:
    window = LiveWindow(gpu=0)
    history = batch(0, 300.0, 1500)
    for key in ("t_ns", "power_w", "sm_clock_mhz"):  # batches 0 and 1, as the history reply holds them
        history[key] = history[key] + batch(1, 300.0, 1500)[key]
    window.apply(history, 0.0)
    window.apply(batch(1, 999.0, 1500), 0.0)  # the first live batch repeats what the history had
    window.apply(batch(2, 400.0, 1500), 0.0)
    assert window.t_ns.size == 3 * BATCH and np.all(np.diff(window.t_ns) > 0)
    assert 999.0 not in window.power_w and window.power_w[-1] == 400.0


def test_other_gpus_are_ignored_and_job_follows_the_samples() -> None:
    window = LiveWindow(gpu=1)
    window.apply(batch(0, 300.0, 1500, gpu=0), 0.0)
    assert window.t_ns.size == 0
    window.apply(batch(1, 300.0, 1500, job="abc", gpu=1), 0.0)
    assert (window.job_id, window.job_state) == ("abc", "running")
    window.apply(batch(2, 300.0, 1500, job=None, gpu=1), 0.0)
    assert window.job_id is None and "no job running" in render_live(window, 60, 16)


def test_watched_job_shows_its_state_and_phase() -> None:
    window = LiveWindow(gpu=0, watched_job="abc", job_id="abc", job_state="queued")
    window.apply(batch(0, 300.0, 1500, job=None), 0.0)
    assert window.job_state == "queued"
    window.apply(batch(1, 300.0, 1500, job="abc"), 0.0)
    window.apply({"kind": "marker", "marker": "begin", "name": "warmup", "t_ns": T0}, 0.0)
    assert "job abc running · phase warmup" in render_live(window, 80, 20)
    window.apply({"kind": "job", "job": {"id": "other", "state": "failed"}}, 0.0)
    window.apply({"kind": "job", "job": {"id": "abc", "state": "succeeded", "name": "burn"}}, 0.0)
    assert "job abc (burn) succeeded" in render_live(window, 80, 20)


def test_bucket_means_hold_between_readings_and_leave_the_past_empty() -> None:
    t_ns = np.array([5, 7, 9], dtype=np.int64)
    values = np.array([10.0, 20.0, np.nan])
    out = bucket_means(t_ns, values, t_end_ns=10, window_ns=10, width=5)
    assert np.isnan(out[:2]).all()
    assert out[2:].tolist() == [10.0, 20.0, 20.0]  # bucket 4's only reading is missing: the last one holds


class FakeReader:
    """Delivers a sample batch every 50 ms of fake time, like the daemon's publisher."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.batches = 0

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        next_batch = self.batches * 0.05
        if next_batch <= self.clock[0] + timeout_s:
            self.clock[0] = max(self.clock[0], next_batch)
            self.batches += 1
            return [batch(self.batches, 300.0, 1500)]
        self.clock[0] += timeout_s
        return []


def test_loop_redraws_at_most_ten_times_a_second_and_stops_after_seconds() -> None:
    clock = [0.0]
    reader = FakeReader(clock)
    window = LiveWindow(gpu=0)
    frames: list[float] = []
    drawn = watch_loop(reader, window, lambda w, now: frames.append(now), seconds=5.0, clock=lambda: clock[0])
    assert drawn == len(frames)
    assert 45 <= drawn <= 5.0 * MAX_REDRAW_HZ + 1
    assert min(np.diff(frames)) >= 1 / MAX_REDRAW_HZ - 1e-9
    assert reader.batches >= 99  # every batch was read, between frames
    assert clock[0] == pytest.approx(5.0, abs=0.06)


def test_loop_stops_once_done_says_so() -> None:
    clock = [0.0]
    reader = FakeReader(clock)
    window = LiveWindow(gpu=0)
    drawn = watch_loop(reader, window, lambda w, now: None, seconds=5.0, clock=lambda: clock[0],
                       done=lambda: clock[0] >= 1.0)  # fmt: skip
    assert clock[0] == pytest.approx(1.0, abs=0.11) and 5 <= drawn <= 12  # ~1 s of frames, not 5


def test_time_axis_ticks_fall_on_their_times_and_end_now() -> None:
    axis, labels = time_axis(30.0, 61)
    ticks = [i for i, c in enumerate(axis[GUTTER:]) if c == "┬"]
    assert ticks == [0, 10, 20, 30, 40, 50, 60]  # every 5 s across 30 s, the last one at now
    assert labels.rstrip().endswith("now") and "-30 s" in labels and "-15 s" in labels
    assert labels.index("-15 s") + 2 == GUTTER + 30  # a label is centred on its tick


def test_the_power_axis_names_the_middle_rows_value() -> None:
    frame = render_live(busy_window(), 48, 16, now_s=10.0).split("\n")
    assert (
        frame[4].startswith("   700 ┤")
        and frame[6].startswith("   350 ┤")
        and frame[7].startswith("     0 ┤")
    )


def node(gpus: int) -> NodeWindows:
    view = NodeWindows()
    for g in range(gpus):
        view.window(g).power_limit_w = 700
        for b in range(100):
            view.apply(batch(b, 100.0 + 100 * g, 1980, f"job{g}" if g % 2 else None, gpu=g), 10.0)
    return view


def test_all_gpus_get_their_own_samples_jobs_and_phases() -> None:
    view = node(4)
    assert sorted(view.windows) == [0, 1, 2, 3]
    assert [round(float(view.windows[g].power_w[-1])) for g in range(4)] == [100, 200, 300, 400]
    view.apply({"kind": "marker", "marker": "begin", "name": "decode", "topic": "job/job3"}, 10.0)
    view.apply({"kind": "job", "job": {"id": "job1", "gpu": 1, "state": "succeeded", "name": "burn"}}, 10.0)
    view.apply({"kind": "job", "job": {"id": "other", "gpu": 2, "state": "queued"}}, 10.0)
    assert view.windows[3].phase == "decode" and view.windows[1].phase is None
    assert view.windows[1].job_state == "succeeded" and view.windows[2].job_id is None


@pytest.mark.parametrize("width", [1, 20, 60, 120])
@pytest.mark.parametrize("height", [1, 4, 9, 24, 60])
def test_the_node_view_fits_any_terminal(width: int, height: int) -> None:
    for gpus in (0, 1, 8):
        lines = render_node(node(gpus), width, height, now_s=10.0).split("\n")
        assert len(lines) <= height and all(len(line) <= width for line in lines)


def test_the_node_view_plots_every_gpu_or_lists_them_when_short() -> None:
    tall = render_node(node(4), 100, 30, now_s=10.0)
    assert tall.startswith("gpuprof watch --all · 4 GPUs · SIMULATED")
    assert [line.split(" · ")[0] for line in tall.split("\n") if line.startswith("GPU ")] == [
        "GPU 0", "GPU 1", "GPU 2", "GPU 3"
    ]  # fmt: skip
    assert tall.count("   700 ┤") == 4 and "job job1" in tall and "now" in tall
    short = render_node(node(4), 100, 7, now_s=10.0).split("\n")
    assert [line[:5] for line in short[1:5]] == ["GPU 0", "GPU 1", "GPU 2", "GPU 3"] and "┤" not in "".join(
        short
    )
