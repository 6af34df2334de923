"""The README's commands, run in the README's order as a newcomer pastes them into one shell, on the
simulated GPU: each must work as written. What a person does by hand (Ctrl-C on a live view, their own
model in the Monitor example, a daemon for the Python client) is the only change, and each such change
must still find its text, so the README and this test move together."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the README's llm examples need torch (pip install '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# Blocks not run here, by their first line, and why; each must still be in the README.
NOT_RUN = {
    "python3 -m venv /opt/gpuprof": "installs gpuprofd as a system service (root, systemd)",
    "install -m 644 systemd/gpuprof-exporter.service": "installs a system service (root, systemd)",
    'python3 -m pip install ".[test]" && python3 -m pytest': "the test command itself (.ci/run runs it)",
}
# Inline commands not run here: an illustration of a program of the user's own.
NOT_RUN_INLINE = {"gpuprof run -- python3 bench.py --n 64"}
# What a person does by hand: README text -> what runs. Each must match the README somewhere.
BY_HAND = {
    "gpuprof watch --job $JOB ": "gpuprof watch --job $JOB --seconds 2 ",  # then Ctrl-C
    "gpuprof watch --all ": "gpuprof watch --all --seconds 2 ",
    "gpuprof sample -o run.csv --json ": "timeout --preserve-status -s INT 3 gpuprof sample -o run.csv --json ",  # noqa: E501
    "model.generate(**inputs)": "model.generate(**inputs)  # the newcomer's own model",
}
STAND_IN_MODEL = """\
import time


class model:
    @staticmethod
    def generate(**_):
        time.sleep(0.3)


inputs = {}
"""


def steps(text: str) -> list[tuple[str, str]]:
    """The README's runnable pieces in order: ("bash", block), ("python", block), ("inline", command)."""
    found: list[tuple[int, str, str]] = []
    for match in re.finditer(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M):
        found.append((match.start(), match.group(1), match.group(2)))
    prose = re.sub(r"^```.*?^```", lambda m: " " * len(m.group(0)), text, flags=re.S | re.M)
    for match in re.finditer(r"`(gpuprof run [^`]+)`", prose):
        found.append((match.start(), "inline", " ".join(match.group(1).split())))
    return [(kind, body) for _, kind, body in sorted(found)]


def test_the_readme_names_only_extras_that_exist_and_ci_runs_its_test_command() -> None:
    text = README.read_text()
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {e for group in re.findall(r'pip install "\.\[([a-z,]+)\]"', text) for e in group.split(",")}
    assert named and named <= extras
    test_command = re.search(r"^python3 -m pip install \"\.\[test\]\" && (.+)$", text, re.M)
    assert test_command is not None and test_command.group(1) in (ROOT / ".ci" / "run").read_text()


def test_the_readmes_commands_run_in_order_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    for before in BY_HAND:
        assert before in text, f"the README no longer has {before!r}: update BY_HAND"
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    script = ["set -euxo pipefail"]
    ran_blocks = 0
    for kind, body in steps(text):
        first = body.strip().splitlines()[0] if body.strip() else ""
        if kind == "inline":
            if body not in NOT_RUN_INLINE:
                script.append(body)
            continue
        if any(first.startswith(skip) for skip in NOT_RUN):
            continue
        for before, after in BY_HAND.items():
            body = body.replace(before, after)
        ran_blocks += 1
        if kind == "bash":
            body = body.replace("/tmp/gpuprof/", f"{tmp_path}/daemon/")  # runs beside other tests
            # The install line: the package is installed already; what follows it runs.
            body = re.sub(r'^python3 -m pip install "\.\[[a-z,]+\]" && ', "", body, flags=re.M)
            script.append(body)
        else:
            snippet = tmp_path / "snippets" / f"snippet{ran_blocks}.py"
            snippet.parent.mkdir(exist_ok=True)
            if "model.generate" in body:
                body = STAND_IN_MODEL + body
            snippet.write_text(body)
            if "Client()" in body:  # the Python client needs a daemon: the one the daemon section starts
                sock = f"ipc://{tmp_path}/daemon/py.sock"
                script.append(
                    f"gpuprofd serve --simulate --endpoint {sock} --state-dir {tmp_path}/daemon/py-state &\n"
                    f"GPUPROF_ENDPOINT={sock} gpuprof status --wait 30 >/dev/null\n"
                    f"GPUPROF_ENDPOINT={sock} python3 {snippet}\nkill %%\nwait"
                )
            else:
                script.append(f"python3 {snippet}")
    assert ran_blocks >= 5
    assert all(any(line.startswith(skip) for line in text.splitlines()) for skip in NOT_RUN)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GPUPROF_", "SLURM_")) and key not in ("XDG_CONFIG_HOME",)
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        GPUPROF_SIM_STATE=str(tmp_path / "sim.state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        PYTHONUNBUFFERED="1",
    )
    (tmp_path / "readme.sh").write_text("\n".join(script) + "\n")
    done = subprocess.run(
        ["bash", str(tmp_path / "readme.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert "SIMULATED" in done.stdout
    for made in ("job.parquet", "run.parquet", "run.csv", "sweep/report.html"):
        assert (tmp_path / made).is_file(), f"{made} missing:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-6000:]
