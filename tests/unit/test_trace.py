"""Writing and reading traces: columns, missing values, metadata, the driver's power samples, bad output
paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuprof.client.wire.errors import OutputError, UsageError
from gpuprof.sampler.records import (
    DRIVER_POWER_DTYPE,
    ENERGY_DTYPE,
    MISSING_SM_CLOCK,
    POWER_SOURCE_AVERAGE,
    SAMPLE_DTYPE,
)
from gpuprof.sampler.trace import (
    SAMPLE_COLUMNS,
    Trace,
    check_writable,
    driver_power_path,
    read_metadata,
    write_frames,
    write_trace,
)


def small_trace() -> Trace:
    samples = np.zeros(4, SAMPLE_DTYPE)
    samples["t_ns"] = [10, 20, 30, 40]
    samples["gpu"] = [0, 1, 0, 1]
    samples["power_mw"] = [100_500, 200_000, 101_000, 200_000]
    samples["sm_clock_mhz"] = [1980, 1755, 0, 1755]
    samples["missing"][2] = MISSING_SM_CLOCK
    samples["power_source"][1] = POWER_SOURCE_AVERAGE
    samples["clock_event_reasons"] = [0, 4, 0, 4]
    energy = np.zeros(2, ENERGY_DTYPE)
    energy["t_start_ns"] = [0, 100]
    energy["t_end_ns"] = [4, 104]
    energy["energy_mj"] = [5, 9]
    driver_power = np.zeros(3, DRIVER_POWER_DTYPE)
    driver_power["t_ns"] = [8, 18, 28]
    driver_power["gpu"] = [0, 1, 0]
    driver_power["power_mw"] = [99_500, 201_250, 100_000]
    return Trace(
        samples,
        energy,
        monotonic_anchor_ns=10,
        wall_anchor_ns=1_000,
        simulated=True,
        driver_power=driver_power,
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_written_trace_reads_back_with_the_documented_columns(tmp_path: Path, suffix: str) -> None:
    samples_path, energy_path = write_trace(small_trace(), tmp_path / f"run{suffix}")
    assert energy_path.name == f"run.energy{suffix}"
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    frame = read(samples_path)
    assert list(frame.columns) == SAMPLE_COLUMNS
    assert frame["power_w"].tolist() == [100.5, 200.0, 101.0, 200.0]
    assert pd.isna(frame["sm_clock_mhz"][2])  # a failed read is missing, not 0
    assert frame["power_source"].tolist() == ["instant", "average_1s", "instant", "instant"]
    energy = read(energy_path)
    assert energy["t_ns"].tolist() == [2, 102]
    assert energy["energy_mj"].tolist() == [5, 9]
    meta = read_metadata(samples_path)
    assert meta["simulated"] is True and meta["wall_anchor_ns"] == 1_000
    driver_power = read(tmp_path / f"run.driver_power{suffix}")
    assert driver_power_path(samples_path) == tmp_path / f"run.driver_power{suffix}"
    assert list(driver_power.columns) == ["t_ns", "gpu", "power_w"]
    assert driver_power["t_ns"].tolist() == [8, 18, 28] and driver_power["gpu"].tolist() == [0, 1, 0]
    assert driver_power["power_w"].tolist() == [99.5, 201.25, 100.0]


def test_a_trace_without_driver_power_writes_an_empty_file_with_its_columns(tmp_path: Path) -> None:
    plain = Trace(small_trace().samples, small_trace().energy)  # a driver that keeps no power samples
    samples_path, _ = write_trace(plain, tmp_path / "run.parquet", wall_clock=True)
    frame = pd.read_parquet(driver_power_path(samples_path))
    assert len(frame) == 0 and list(frame.columns) == ["t_ns", "time", "gpu", "power_w"]
    assert str(frame["t_ns"].dtype) == "int64" and str(frame["power_w"].dtype) == "float64"


def test_frames_without_driver_power_write_no_driver_power_file(tmp_path: Path) -> None:
    trace = small_trace()
    samples_path, _ = write_frames(trace.samples_frame(), trace.energy_frame(), tmp_path / "run.csv", {})
    assert not driver_power_path(samples_path).exists()


def test_extend_appends_driver_power() -> None:
    trace = Trace()
    more = small_trace()
    trace.extend(more.samples, more.energy, more.driver_power)
    trace.extend(more.samples, more.energy)
    assert trace.samples.size == 8 and trace.driver_power["t_ns"].tolist() == [8, 18, 28]


def test_wall_time_uses_the_anchor() -> None:
    assert small_trace().wall_time_ns(20) == 1_010


def test_output_must_be_parquet_or_csv(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.parquet or \.csv"):
        check_writable(tmp_path / "trace.txt")


def test_missing_directory_is_reported_before_sampling(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        check_writable(tmp_path / "nope" / "trace.csv")


def test_directory_as_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path / "trace.csv")
    (tmp_path / "other.driver_power.csv").mkdir()
    with pytest.raises(OutputError, match=r"other\.driver_power\.csv': it is a directory"):
        check_writable(tmp_path / "other.csv")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_writable(tmp_path / "trace.csv")
    finally:
        tmp_path.chmod(0o700)


def test_write_failure_becomes_output_error(tmp_path: Path) -> None:
    target = tmp_path / "gone" / "trace.parquet"
    with pytest.raises(OutputError):
        write_trace(small_trace(), target)
