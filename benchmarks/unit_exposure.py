"""systemd-analyze's exposure score of gpuprofd.service, alone and with each drop-in merged in.

Usage: python3 benchmarks/unit_exposure.py   (needs systemd-analyze; reads systemd/ of this checkout)
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
VARIANTS = [
    ("the unit as shipped (local clients, no clock control)", ()),
    ("+ gpuprofd-dvfs.conf (clock control)", ("gpuprofd-dvfs.conf",)),
    ("+ gpuprofd-remote.conf (tcp clients)", ("gpuprofd-remote.conf",)),
    ("+ both", ("gpuprofd-dvfs.conf", "gpuprofd-remote.conf")),
]


def exposure(drop_ins: tuple[str, ...], directory: Path) -> str:
    text = (SYSTEMD / "gpuprofd.service").read_text().replace("/usr/local/bin/gpuprofd", "/bin/true")
    for name in drop_ins:
        text += "\n" + (SYSTEMD / name).read_text()
    unit = directory / "gpuprofd.service"
    unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\S+)", done.stdout)
    return f"{found.group(1)} {found.group(2)}" if found else f"? ({done.stderr.strip()[:200]})"


def main() -> int:
    version = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, check=False)
    print(f"# {version.stdout.splitlines()[0] if version.stdout else 'systemd-analyze ?'}, {platform.node()}")
    print("| unit | exposure |\n| --- | --- |")
    with tempfile.TemporaryDirectory() as directory:
        for label, drop_ins in VARIANTS:
            print(f"| {label} | {exposure(drop_ins, Path(directory))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
