"""Every error a gpuprof user can see, and the one table of the exit codes the commands return.

The sampler's errors (NVML, the library, devices, permissions, arguments, files, configurations) are
defined with the sampler, the lowest layer, which raises them; the errors of the contract (job specs,
the daemon's answers, waiting for jobs) are defined here. ``exit_code`` maps any of them to its code
through EXIT_CODES, the only place a code is given; docs/protocol.md lists the same table.
"""

from __future__ import annotations

from gpuprof.sampler.errors import (
    ConfigError,
    DeviceNotFound,
    GpuprofError,
    NvmlError,
    NvmlLibraryNotFound,
    OutputError,
    PermissionDenied,
    UsageError,
)

__all__ = [
    "EXIT_CODES",
    "ConfigError",
    "DaemonError",
    "DaemonUnavailable",
    "DeviceNotFound",
    "GpuprofError",
    "JobNotFound",
    "JobSpecError",
    "JobUnsuccessful",
    "JobWaitTimeout",
    "NvmlError",
    "NvmlLibraryNotFound",
    "OutputError",
    "PermissionDenied",
    "PrivateDaemonFailed",
    "UsageError",
    "exit_code",
]


class JobSpecError(ConfigError):
    """A job spec that cannot be used; names the file, the line and the key."""


class DaemonUnavailable(GpuprofError):
    """No gpuprofd answered at the endpoint in time."""

    def __init__(self, endpoint: str, why: str) -> None:
        self.endpoint = endpoint
        super().__init__(
            f"no gpuprofd answered at {endpoint} ({why}). Start one with "
            f"`gpuprofd serve --simulate --endpoint {endpoint}` (drop --simulate on a GPU node), "
            "point GPUPROF_ENDPOINT or --endpoint at a running one, "
            "or use `gpuprof run JOB.yaml`, which starts a private daemon"
        )


class PrivateDaemonFailed(GpuprofError):
    """The private gpuprofd that ``gpuprof run`` started did not come up."""


class JobNotFound(GpuprofError):
    """No job (or no trace of one) by that id."""


class DaemonError(GpuprofError):
    """An error reply from gpuprofd: ``code`` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"gpuprofd: {code}: {message}")


class JobUnsuccessful(GpuprofError):
    """A job that the command waited for ended failed, cancelled or interrupted."""


class JobWaitTimeout(GpuprofError):
    """A job that did not finish within the time given to wait for it."""


# The exit status of a command that fails with each error (a subclass not listed takes its nearest
# listed base's). 130 is Ctrl-C, and click's own usage errors exit 2 like UsageError.
EXIT_CODES: dict[type[GpuprofError], int] = {
    GpuprofError: 1,
    UsageError: 2,
    NvmlLibraryNotFound: 3,
    NvmlError: 4,
    DeviceNotFound: 5,
    PermissionDenied: 6,
    OutputError: 7,
    ConfigError: 8,  # JobSpecError too: a spec is the job's configuration
    DaemonUnavailable: 9,
    JobNotFound: 10,
    DaemonError: 11,
    JobUnsuccessful: 12,
    JobWaitTimeout: 13,
    PrivateDaemonFailed: 14,
}


def exit_code(error: GpuprofError) -> int:
    """The exit status for ``error``: its class's in EXIT_CODES, or its nearest listed base's."""
    for kind in type(error).__mro__:
        if kind in EXIT_CODES:
            return EXIT_CODES[kind]
    return 1
