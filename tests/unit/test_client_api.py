"""The client's pure parts: error mapping, trace assembly, live-message decoding, progress and job rendering.

The socket side (request matching, timeouts, stale replies) is tested against a fake daemon in
tests/integration/test_client_fake_daemon.py.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from gpuprof.client.api import (
    DEFAULT_ENDPOINT,
    DaemonError,
    DaemonUnavailable,
    JobNotFound,
    default_endpoint,
    error_for,
    frame_from_chunks,
)
from gpuprof.client.handle import JobProgress
from gpuprof.client.job_render import job_json, progress_line, render_gpus, render_job, render_jobs
from gpuprof.client.stream import decode_live
from gpuprof.client.wire.errors import GpuprofError, JobSpecError, PermissionDenied
from gpuprof.client.wire.errors import exit_code as exit_code_of
from gpuprof.client.wire.messages import GpuInfo
from gpuprof.client.wire.protocol import encode_publish


def figures(**extra: Any) -> dict[str, Any]:
    return {
        "energy_counter_j": 3050.5,
        "energy_counter_uncertainty_j": 12.25,
        "counter_t_start_ns": 1_000_000_000,
        "counter_t_end_ns": 11_000_000_000,
        "energy_counter_method": "nvmlDeviceGetTotalEnergyConsumption difference",
        "energy_integrated_j": 3040.0,
        "energy_integrated_uncertainty_j": 30.5,
        "energy_integrated_method": "integrated instant power (sample and hold)",
        "duration_s": 10.0,
        "mean_power_w": 304.0,
        "peak_power_w": 690.0,
        "power_source": "instant",
        "sm_clock_min_mhz": 1410,
        "sm_clock_max_mhz": 1980,
        "clock_event_reasons": ["sw_power_cap"],
        "shorter_than_sensor_update": False,
        **extra,
    }


def finished_job(simulated: bool = True) -> dict[str, Any]:
    return {
        "id": "3f2a9c",
        "name": "burn-demo",
        "state": "succeeded",
        "reason": None,
        "user": "alice",
        "gpu": 0,
        "simulated": simulated,
        "created_ns": 1_700_000_000_000_000_000,
        "started_ns": 1_700_000_001_000_000_000,
        "finished_ns": 1_700_000_011_000_000_000,
        "spec": {"workload": "burn"},
        "result": {
            **figures(),
            "windows": [
                {"name": "warmup", **figures(duration_s=2.0)},
                {"name": "step 3", **figures(duration_s=0.05, shorter_than_sensor_update=True)},
            ],
        },
    }


@pytest.mark.parametrize(
    ("code", "kind", "exit_code"),
    [
        ("not_found", JobNotFound, 10),
        ("denied", PermissionDenied, 6),
        ("invalid_spec", JobSpecError, 8),
        ("internal", DaemonError, 11),
        ("too_large", DaemonError, 11),
    ],
)
def test_error_codes_become_gpuprof_errors(code: str, kind: type[GpuprofError], exit_code: int) -> None:
    error = error_for(code, "what went wrong")
    assert type(error) is kind and exit_code_of(error) == exit_code
    assert "what went wrong" in str(error)


def test_unavailable_daemon_names_the_endpoint_and_how_to_start_one() -> None:
    error = DaemonUnavailable("ipc:///tmp/x.sock", "no reply within 1.5 s")
    message = str(error)
    assert exit_code_of(error) == 9
    assert "ipc:///tmp/x.sock (no reply within 1.5 s)" in message
    assert "gpuprofd serve --simulate --endpoint ipc:///tmp/x.sock" in message
    assert "gpuprof run" in message


def test_default_endpoint_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUPROF_ENDPOINT", raising=False)
    assert default_endpoint() == DEFAULT_ENDPOINT
    monkeypatch.setenv("GPUPROF_ENDPOINT", "tcp://node7:5555")
    assert default_endpoint() == "tcp://node7:5555"


def test_trace_chunks_become_one_typed_frame_with_missing_readings_kept_missing() -> None:
    chunks = [
        {"columns": {"t_ns": [1, 2], "gpu": [0, 0], "power_w": [100.5, None], "sm_clock_mhz": [1980, None]}},
        {"columns": {"t_ns": [3], "gpu": [0], "power_w": [101.0], "sm_clock_mhz": [1410]}},
    ]
    frame = frame_from_chunks(chunks)
    assert frame["t_ns"].tolist() == [1, 2, 3]
    assert str(frame["t_ns"].dtype) == "int64" and str(frame["gpu"].dtype) == "int16"
    assert str(frame["power_w"].dtype) == "float64" and pd.isna(frame["power_w"][1])
    assert str(frame["sm_clock_mhz"].dtype) == "UInt32" and frame["sm_clock_mhz"][1] is pd.NA


def test_empty_trace_keeps_its_columns() -> None:
    frame = frame_from_chunks([{"columns": {"t_ns": [], "energy_mj": []}, "rows": 0, "next_offset": None}])
    assert list(frame.columns) == ["t_ns", "energy_mj"] and frame.empty


def test_live_markers_keep_their_own_kind_apart() -> None:
    payload = encode_publish("marker", {"kind": "begin", "name": "warmup", "t_ns": 5, "attrs": {}})
    message = decode_live(b"job/abc", payload)
    assert message == {
        "kind": "marker",
        "marker": "begin",
        "name": "warmup",
        "t_ns": 5,
        "attrs": {},
        "topic": "job/abc",
    }
    assert decode_live(b"gpu/0", b"\xc1 not msgpack") is None


def test_progress_follows_samples_markers_and_state() -> None:
    job = {"id": "abc", "state": "queued", "created_ns": 1_000_000_000, "simulated": True}
    progress = JobProgress(job, now_ns=lambda: 3_500_000_000)
    assert progress.elapsed_s == pytest.approx(2.5)
    progress.apply({"kind": "samples", "power_w": [300.0, 310.0, None], "sm_clock_mhz": [1980, None, None]})
    progress.apply({"kind": "marker", "marker": "begin", "name": "warmup"})
    progress.apply({"kind": "job", "job": {**job, "state": "running", "started_ns": 3_000_000_000}})
    assert (progress.power_w, progress.sm_clock_mhz, progress.phase) == (310.0, 1980, "warmup")
    line = progress_line(progress)
    assert " ".join(line.split()) == "job abc running 0.5 s 310.0 W 1980 MHz phase warmup SIMULATED"
    progress.apply({"kind": "marker", "marker": "end", "name": "warmup"})
    assert progress.phase is None


def test_json_summary_lifts_the_result_to_the_top_level() -> None:
    summary = job_json(finished_job())
    for key in ("id", "state", "user", "energy_counter_j", "energy_integrated_j", "duration_s"):
        assert summary[key] is not None, key
    assert summary["mean_power_w"] == 304.0 and summary["simulated"] is True
    assert [w["name"] for w in summary["windows"]] == ["warmup", "step 3"]
    assert "result" not in summary
    json.dumps(summary)


def test_json_summary_of_an_unfinished_job_has_every_key() -> None:
    summary = job_json({"id": "a", "state": "queued", "user": "bob", "simulated": False})
    assert summary["energy_counter_j"] is None and summary["windows"] == []


def test_text_result_gives_every_energy_figure_its_method_window_and_bound() -> None:
    text = render_job(finished_job())
    assert "SIMULATED GPU 0" in text and "SIMULATED: these figures" in text
    assert "energy, counter           3,050 J ± 13 J  over 10.000 s" in text
    assert "energy, integrated power  3,040 J ± 31 J  over 10.000 s" in text
    assert "method: nvmlDeviceGetTotalEnergyConsumption difference" in text
    assert "method: integrated instant power (sample and hold)" in text
    assert "SM clock 1410-1980 MHz; clock-event reasons: sw_power_cap" in text
    # Windows: one table row each, the methods stated once above it, short ones flagged.
    assert "energy ± bound over each window's DURATION, by the counter (nvmlDevice" in text
    assert "and by integrated power (integrated instant power (sample and hold))" in text
    warmup = next(line for line in text.splitlines() if line.strip().startswith("warmup"))
    assert warmup.split()[:8] == ["warmup", "2.000", "s", "3,050", "J", "±", "13", "J"]  # its own duration
    assert "10.000 s" not in warmup  # the counter readings' span is not the figure's window
    step = next(line for line in text.splitlines() if line.strip().startswith("step 3"))
    assert step.endswith("SHORT") and "SHORT: shorter than one power-sensor update" in text


def test_many_windows_are_cut_short_in_text() -> None:
    job = finished_job()
    job["result"]["windows"] = [{"name": f"step {i}", **figures()} for i in range(500)]
    text = render_job(job)
    assert "step 19 " in text and "step 20 " not in text and "... and 480 more (--json" in text


def test_real_gpu_result_is_not_labelled_simulated() -> None:
    assert "SIMULATED" not in render_job(finished_job(simulated=False))


def test_failed_job_shows_its_reason_without_a_result() -> None:
    job = {**finished_job(), "state": "failed", "reason": "worker killed by SIGKILL", "result": None}
    text = render_job(job)
    assert "failed" in text and "worker killed by SIGKILL" in text and "energy" not in text


def test_tables_of_jobs_and_gpus() -> None:
    table = render_jobs([finished_job(), {"id": "b", "state": "queued", "gpu": 1, "user": "bob"}])
    header, first, second = table.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "STATE", "USER", "GPU"]
    assert "3f2a9c" in first and "succeeded (sim)" in first and "3,050 J ± 13 J" in first
    assert second.split()[:4] == ["b", "queued", "bob", "1"]
    assert render_jobs([]) == "no jobs"
    gpus = render_gpus(
        [
            GpuInfo(
                index=0,
                name="NVIDIA H100 80GB HBM3",
                uuid="GPU-sim-0",
                simulated=True,
                memory_clocks_mhz=(2619,),
                graphics_clocks_mhz=(1980, 1410, 345),
                power_limit_w=700,
                min_power_limit_w=200,
                max_power_limit_w=700,
            )
        ]
    )
    assert "(SIMULATED)" in gpus and "345-1980 MHz (3)" in gpus and "700 W (200 W-700 W)" in gpus


def test_a_job_run_at_set_clocks_says_which_and_that_they_were_reset() -> None:
    job = finished_job()
    job["result"]["dvfs"] = {"set": {"sm_clock_mhz": 1410, "memory_clock_mhz": None, "power_limit_w": 500.0}}
    text = render_job(job)
    assert "clocks          SM clock locked at 1410 MHz, power limit 500 W; reset at the job's end" in text
    assert "clocks " not in render_job(finished_job())


def test_a_swept_job_says_its_clocks_and_that_it_was_reset_after_every_point() -> None:
    job = finished_job()
    job["result"]["dvfs"] = {
        "set": {"sm_clock_mhz": None, "sweep_sm_clocks_mhz": [600, 1005, 1410], "power_limit_w": None},
        "reset": "after every point and at the job's end",
    }
    text = render_job(job)
    assert (
        "clocks          SM clock locked per point, 3 clocks, 600-1410 MHz; "
        "reset after every point and at the job's end"
    ) in text


def test_windows_of_one_name_say_which_point_or_batch_size_they_are() -> None:
    from gpuprof.client.job_render import _window_lines

    windows = [
        {"name": "point", "attrs": {"id": "p3", "task": "qa", "batch_size": 4, "sm_clock_mhz": 1500}},
        {"name": "warmup", "attrs": {"id": "p3"}},
        {"name": "steady_decode", "attrs": {"id": "m0.bs4.s1"}},
        {"name": "cooldown", "attrs": {"seconds": 0.5}},
    ]
    names = [line.strip().split("  ")[0] for line in _window_lines(windows)[3:]]
    assert names == ["point p3 (qa, batch 4, 1500 MHz)", "warmup p3", "steady_decode m0.bs4.s1", "cooldown"]


def test_progress_shows_the_share_done_and_the_time_left_where_the_workload_says() -> None:
    started = 1_000 * 10**9
    progress = JobProgress(
        {"id": "j", "state": "running", "started_ns": started}, now_ns=lambda: started + 40 * 10**9
    )
    progress.apply({"kind": "marker", "marker": "status", "name": "status", "attrs": {"text": "loading"}})
    assert progress.fraction is None and "%" not in progress_line(progress)
    progress.apply(
        {
            "kind": "marker",
            "marker": "status",
            "name": "status",
            "attrs": {"text": "x", "done": 2.5, "total": 10},
        }
    )
    assert progress.fraction == 0.25 and progress.seconds_left == 120.0  # 40 s for a quarter
    assert " 25% ~2:00 left" in progress_line(progress)
    for bad in ({"done": 11, "total": 10}, {"done": -1, "total": 10}, {"done": "a", "total": 2}):
        progress.apply({"kind": "marker", "marker": "status", "name": "status", "attrs": bad})
        assert progress.fraction == 0.25  # what cannot be a share is not one
