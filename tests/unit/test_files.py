"""Files a user names are read only when they are regular files of a bounded size, and never hang."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gpuprof.sampler.files import read_regular_file, unusable_path


def test_a_regular_file_is_read_up_to_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, 100) == b"x" * 100
    with pytest.raises(OSError, match=r"larger than 99 bytes \(100 bytes\)"):
        read_regular_file(path, 99)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_anything_else_is_refused_before_it_is_read(tmp_path: Path, kind: str) -> None:
    path = {"fifo": tmp_path / "pipe", "directory": tmp_path, "device": Path("/dev/zero")}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # with no writer: a blocking read would never return
    words = {"fifo": "a FIFO (named pipe)", "directory": "a directory", "device": "a character device"}[kind]
    with pytest.raises(OSError, match=re.escape(f"not a regular file: it is {words}")):
        read_regular_file(path, 1 << 20)


def test_why_a_path_cannot_be_used_is_said_in_words(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert unusable_path(tmp_path / "none", directory=True) == f"{tmp_path}/none: no such directory"
    assert (
        unusable_path(tmp_path / "file", directory=True)
        == f"{tmp_path}/file: is a regular file, not a directory"
    )
    assert unusable_path(tmp_path, directory=False) == f"{tmp_path}: is a directory, not a regular file"
    assert unusable_path(tmp_path, directory=True) is None and unusable_path(tmp_path / "file", False) is None
