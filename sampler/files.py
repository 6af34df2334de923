"""Reading files a user names (job specs, saved results, datasets, models) without hanging or flooding.

Only regular files are read, and only up to a size: a FIFO, a device or a directory is refused before it
is read (opening a FIFO to read would wait for a writer forever), and a file larger than the cap is
refused without reading it whole. Errors are OSErrors whose ``strerror`` says what is wrong in words.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path

__all__ = ["file_kind", "read_regular_file", "unusable_path"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file of ``mode`` is, in words ("a FIFO (named pipe)", "a regular file")."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _not_regular(path: str | os.PathLike[str], mode: int) -> OSError:
    return OSError(errno.EINVAL, f"not a regular file: it is {file_kind(mode)}", str(path))


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The content of the regular file ``path``, at most ``max_bytes`` long; OSError otherwise."""
    mode = os.stat(path).st_mode  # before opening: some devices act when opened
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(descriptor)  # what was opened, should the path have changed since
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode)
        if info.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {_size(max_bytes)} ({_size(info.st_size)})", str(path))
        os.set_blocking(descriptor, True)
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(descriptor, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(descriptor)
    if total > max_bytes:  # it grew while being read
        raise OSError(errno.EFBIG, f"larger than {_size(max_bytes)}", str(path))
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


def unusable_path(path: str | os.PathLike[str], directory: bool) -> str | None:
    """Why this process's user cannot use ``path`` as a directory (or a regular file), or None.

    The words name the path and, for a permission problem, the user: "no such directory",
    "permission denied to alice", "is a regular file, not a directory".
    """
    target = Path(path)
    want = "directory" if directory else "file"
    user = _user()
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return f"{target}: no such {want}"
    except PermissionError:
        return f"{target}: permission denied to {user} (a directory on its way cannot be searched)"
    except OSError as exc:
        return f"{target}: {exc.strerror or exc}"
    if directory and not stat.S_ISDIR(mode):
        return f"{target}: is {file_kind(mode)}, not a directory"
    if not directory and not stat.S_ISREG(mode):
        return f"{target}: is {file_kind(mode)}, not a regular file"
    needed = os.R_OK | os.X_OK if directory else os.R_OK
    if not os.access(target, needed):
        return f"{target}: permission denied to {user}"
    return None


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"
