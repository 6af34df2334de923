"""The systemd unit: systemd accepts it, and its exposure score stays within the project's bound."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
MAX_EXPOSURE = 3.0  # the shipped unit, local clients, with or without clock control

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (systemd's tools)"
)


def _unit(tmp_path: Path, *drop_ins: str) -> Path:
    """The unit with drop-ins appended (as systemd merges them), ExecStart pointing at a real program."""
    text = (SYSTEMD / "gpuprofd.service").read_text().replace("/usr/local/bin/gpuprofd", "/bin/true")
    for name in drop_ins:
        text += "\n" + (SYSTEMD / name).read_text()
    path = tmp_path / "gpuprofd.service"
    path.write_text(text)
    return path


def _exposure(unit: Path) -> float:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr
    return float(found.group(1))


@pytest.mark.parametrize("drop_ins", [(), ("gpuprofd-dvfs.conf",), ("gpuprofd-remote.conf",)])
def test_systemd_accepts_the_unit(tmp_path: Path, drop_ins: tuple[str, ...]) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(_unit(tmp_path, *drop_ins))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("drop_ins", [(), ("gpuprofd-dvfs.conf",)])
def test_the_unit_is_hardened(tmp_path: Path, drop_ins: tuple[str, ...]) -> None:
    assert _exposure(_unit(tmp_path, *drop_ins)) <= MAX_EXPOSURE


def test_the_unit_runs_the_commands_gpuprofd_has_and_resets_clocks_after_any_stop() -> None:
    unit = (SYSTEMD / "gpuprofd.service").read_text()
    assert "Type=notify" in unit and "Restart=on-failure" in unit
    assert "ExecStart=/usr/local/bin/gpuprofd serve" in unit
    assert "ExecStopPost=/usr/local/bin/gpuprofd reset-clocks" in unit
    assert "CAP_SYS_ADMIN" not in unit.split("[Service]")[1]  # only the DVFS drop-in grants it


def test_systemd_accepts_the_exporters_unit_and_it_is_hardened(tmp_path: Path) -> None:
    text = (SYSTEMD / "gpuprof-exporter.service").read_text().replace("/usr/local/bin/gpuprof", "/bin/true")
    unit = tmp_path / "gpuprof-exporter.service"
    unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert _exposure(unit) <= MAX_EXPOSURE
