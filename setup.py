"""Builds gpuprof: the Cython sampler and gpuprof's simulated NVML library, with the machine's C compiler.

The three top-level folders become the import packages ``gpuprof.daemon``, ``gpuprof.sampler`` and
``gpuprof.client``; ``gpuprof`` itself (what a user's code imports: ``gpuprof.markers``, ``gpuprof.Monitor``)
is ``client/top``. Metadata lives in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SIMNVML_EXT = "gpuprof.sampler.libgpuprof_simnvml"
SIMNVML_FILENAME = "libgpuprof_simnvml.so"

BUILD_HELP = """
gpuprof could not be built: {problem}

gpuprof compiles a small C extension and needs a C compiler and the Python development headers:
  Debian/Ubuntu:  sudo apt-get install gcc python3-dev
  RHEL/Fedora:    sudo dnf install gcc python3-devel
  conda:          conda install -c conda-forge c-compiler python
"""


class BuildNative(build_ext):
    """build_ext that names the simulated NVML library plainly and explains a missing toolchain."""

    def run(self) -> None:
        include = sysconfig.get_paths()["include"]
        if not os.path.exists(os.path.join(include, "Python.h")):
            raise SystemExit(BUILD_HELP.format(problem=f"Python.h not found in {include}"))
        cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
        if shutil.which(cc) is None:
            raise SystemExit(BUILD_HELP.format(problem=f"C compiler {cc!r} not found"))
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError: re-raised with the remedy
            if type(exc).__name__ in {"CompileError", "LinkError", "CCompilerError"}:
                raise SystemExit(BUILD_HELP.format(problem=str(exc))) from exc
            raise

    def get_ext_filename(self, fullname: str) -> str:
        # The simulated NVML is a plain shared library loaded by path, not a Python module.
        if fullname.endswith("libgpuprof_simnvml"):
            return os.path.join(*fullname.split(".")[:-1], SIMNVML_FILENAME)
        return super().get_ext_filename(fullname)


def cython_include_path() -> list[str]:
    """A folder where gpuprof/sampler links to sampler/, so that Cython finds the sampler's .pxd files.

    Cython looks .pxd files up by the module's package path (gpuprof/sampler/_nvml.pxd for
    ``from ._nvml cimport``, and _native.pxd itself) and knows nothing of package_dir.
    """
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build", "cython-include")
    link = os.path.join(root, "gpuprof", "sampler")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join("..", "..", "..", "sampler"), link)
    return [root]


def cythonized() -> list[Extension]:
    from Cython.Build import cythonize

    native = [
        Extension(
            f"gpuprof.sampler.{name}",
            sources=[f"sampler/{name}.pyx"],
            include_dirs=["sampler/include"],
            libraries=["dl", "pthread"],
            extra_compile_args=["-O2"],
        )
        for name in ("_native", "_loops")  # the extension type, and the threads it starts
    ]
    return cythonize(
        native,
        include_path=cython_include_path(),
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )


simnvml = Extension(
    SIMNVML_EXT,
    sources=[
        "sampler/simnvml/simnvml.c",
        "sampler/simnvml/nvml_control.c",
        "sampler/simnvml/sim_control.c",
        "sampler/simnvml/sim_state.c",
        "sampler/simnvml/sim_model.c",
        "sampler/simnvml/sim_config.c",
    ],
    include_dirs=["sampler/include"],
    libraries=["m", "pthread"],
    extra_compile_args=["-O2", "-std=gnu11", "-fvisibility=hidden"],
)

setup(
    package_dir={
        "gpuprof": "client/top",
        "gpuprof.daemon": "daemon",
        "gpuprof.sampler": "sampler",
        "gpuprof.client": "client",
    },
    packages=[
        "gpuprof",
        "gpuprof.daemon",
        "gpuprof.daemon.server",
        "gpuprof.daemon.worker",
        "gpuprof.daemon.worker.workloads",
        "gpuprof.daemon.worker.llm",
        "gpuprof.daemon.worker.llm.prompts",  # data: the built-in task sets
        "gpuprof.daemon.analysis",
        "gpuprof.sampler",
        "gpuprof.sampler.include",  # data: the C headers
        "gpuprof.sampler.simnvml",  # data: the simulated GPU's C sources
        "gpuprof.client",
        "gpuprof.client.commands",
        "gpuprof.client.wire",
    ],
    package_data={
        "gpuprof.sampler": ["py.typed", "*.pyi", "*.pxd"],
        "gpuprof.sampler.include": ["*.h"],
        "gpuprof.sampler.simnvml": ["*.c", "*.h"],
        "gpuprof": ["py.typed"],
        "gpuprof.client": ["py.typed"],
        "gpuprof.daemon": ["py.typed"],
        "gpuprof.daemon.worker.llm": ["tokenizer.json"],
        "gpuprof.daemon.worker.llm.prompts": ["*.jsonl"],
    },
    ext_modules=[*cythonized(), simnvml],
    cmdclass={"build_ext": BuildNative},
    zip_safe=False,
)
