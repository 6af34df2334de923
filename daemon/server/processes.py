"""A worker's processes as the OS sees them: alive or not, their memory, what they wrote, their limits."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerLimits", "directory_bytes", "process_cwd", "running", "tree_pids", "tree_rss_bytes"]


def process_cwd(pid: int) -> Path | None:
    """The working directory of a running process, None when it is gone, a zombie or not readable."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) if running(pid) else None
    except OSError:
        return None


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie waiting for a parent that is not ours to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class WorkerLimits:
    """What one job's processes may use: resident memory (all of them together) and bytes written."""

    memory_bytes: int
    output_bytes: int

    @classmethod
    def from_config(cls, memory_mb: int, output_mb: int) -> WorkerLimits:
        memory = memory_mb << 20
        if memory == 0:
            memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.8)
        return cls(memory_bytes=memory, output_bytes=output_mb << 20)


def tree_pids(pid: int) -> list[int]:
    """``pid`` and every process it started, as far as /proc tells (children of each thread)."""
    pids: list[int] = []
    pending = [pid]
    while pending and len(pids) < 10_000:
        current = pending.pop()
        pids.append(current)
        try:
            for task in os.scandir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task.name}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return pids


def tree_rss_bytes(pid: int) -> int:
    """The resident memory of ``pid`` and its descendants (shared pages counted in each)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for member in tree_pids(pid):
        try:
            with open(f"/proc/{member}/statm") as statm:
                total += int(statm.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def directory_bytes(path: Path) -> int:
    """Bytes allocated to the files under ``path`` (sparse files count what they occupy)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total
