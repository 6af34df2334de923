"""``gpuprof sample`` as a user runs it: a separate process, stopped with Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

GPUPROF = [sys.executable, "-m", "gpuprof.client.cli"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_a_recording_keeps_what_was_recorded(tmp_path: Path, signum: int) -> None:
    target = tmp_path / "trace.parquet"
    process = subprocess.Popen(
        [*GPUPROF, "sample", "--simulate", "-o", str(target), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    time.sleep(1.5)  # past start-up, recording
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert summary["samples"] > 0
    assert len(pd.read_parquet(target)) == summary["samples"]
