"""The pynvml sampler follows the library it is given, also after another one was used in the process."""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pynvml

from gpuprof.sampler.device import use_library
from gpuprof.sampler.library import simulated_library_path


def address(function: object) -> int | None:
    return ctypes.cast(function, ctypes.c_void_p).value


def test_switching_library_drops_functions_resolved_from_the_previous_one(tmp_path: Path) -> None:
    first = simulated_library_path()
    second = str(tmp_path / "copy-of-libnvidia-ml.so.1")
    shutil.copy(first, second)  # another path: dlopen gives a separate instance with other addresses
    use_library(first)
    before = address(pynvml._nvmlGetFunctionPointer("nvmlDeviceGetCount_v2"))
    use_library(second)
    after = address(pynvml._nvmlGetFunctionPointer("nvmlDeviceGetCount_v2"))
    assert after == address(ctypes.CDLL(second).nvmlDeviceGetCount_v2)
    assert after != before
    use_library(first)
