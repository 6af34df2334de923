"""A job's worker process: ``python -m gpuprof.daemon.worker`` runs one workload and reports its phases.

Environment (set by the daemon):

- ``GPUPROF_JOB_SPEC``: path of a JSON file holding ``JobSpec.to_dict()``.
- ``GPUPROF_MARKER_FD``: the inherited AF_UNIX SOCK_SEQPACKET socket to send markers on.
- ``GPUPROF_WORKER_MAX_FILE_BYTES``: the largest file the job may write (RLIMIT_FSIZE, soft and hard);
  a larger write fails with EFBIG.
- ``GPUPROF_SIMULATE=1``: run on simulated GPU ``GPUPROF_SIM_GPU`` (default: the spec's ``gpu``); otherwise
  the real GPU is cuda:0, the one CUDA_VISIBLE_DEVICES names.

Exit status: 0 done; 1 failed (after a ``fail`` marker with a one-line reason); 2 no usable marker socket
(nothing could be reported); 143 terminated by SIGTERM (after a ``fail`` marker). Needs no privileges:
under a root daemon it runs as the job's user (``GPUPROF_WORKER_UID``), and checks that it does before it
reads anything of the job.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback
from collections.abc import Mapping
from types import FrameType

from gpuprof.client.wire.errors import GpuprofError, JobSpecError
from gpuprof.client.wire.jobspec import MAX_SPEC_BYTES, JobSpec

from ..markers import MarkerChannelError
from ..worker_env import EXPECT_UID_ENV, JOB_SPEC_ENV, MAX_FILE_ENV, SIM_GPU_ENV, SIMULATE_ENV
from .markers import MarkerWriter
from .workloads import GpuTarget, run_workload

EXIT_OK, EXIT_FAILED, EXIT_NO_CHANNEL, EXIT_TERMINATED = 0, 1, 2, 128 + signal.SIGTERM


class WorkerTerminated(BaseException):
    """SIGTERM arrived; a BaseException so that workload code catching Exception does not swallow it."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough; the cleanup must not be interrupted
    raise WorkerTerminated


def check_identity(expected: str | None) -> None:
    """Refuse to run unless this process is exactly the uid the daemon meant, with no way back to root."""
    if expected is None:
        return
    uid = int(expected)
    ruid, euid, suid = os.getresuid()
    if (ruid, euid, suid) != (uid, uid, uid):
        raise GpuprofError(f"worker runs as uids {(ruid, euid, suid)}, not {uid}: refusing to run the job")
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise GpuprofError("worker could become root again after the privilege drop: refusing to run the job")


def limit_files(max_bytes: str | None) -> None:
    """Cap the size of every file this process and its children write; it cannot raise the cap again."""
    if max_bytes is None:
        return
    if not max_bytes.isdigit():
        raise GpuprofError(f"${MAX_FILE_ENV} must be a byte count, got {max_bytes!r}")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails with EFBIG, not a core dump
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(max_bytes), int(max_bytes)))


def read_spec(path: str | None) -> JobSpec:
    """The job spec in the JSON file at ``path`` (``JobSpec.to_dict()`` as JSON)."""
    if not path:
        raise JobSpecError(f"${JOB_SPEC_ENV} is not set: the worker needs the job spec's JSON file")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise JobSpecError(f"{path}: cannot read the job spec: {exc.strerror}") from None
    try:
        if len(data) > MAX_SPEC_BYTES:
            raise ValueError(f"larger than {MAX_SPEC_BYTES} bytes")
        plain = json.loads(data)
    except ValueError as exc:
        raise JobSpecError(f"{path}: not a JSON job spec: {exc}") from None
    return JobSpec.from_dict(plain)


def gpu_target(spec: JobSpec, environ: Mapping[str, str]) -> GpuTarget:
    """The GPU the environment gives this worker."""
    if environ.get(SIMULATE_ENV) != "1":
        return GpuTarget(simulated=False)
    index = environ.get(SIM_GPU_ENV, str(spec.gpu))
    if not index.isdigit():
        raise GpuprofError(f"${SIM_GPU_ENV} must be a GPU index, got {index!r}")
    return GpuTarget(simulated=True, sim_index=int(index))


def _report(markers: MarkerWriter, reason: str) -> None:
    try:
        markers.fail(reason)
    except GpuprofError as exc:  # the daemon is gone: stderr is all that is left
        print(f"gpuprof worker: cannot report the failure: {exc}", file=sys.stderr)


def main(environ: Mapping[str, str] | None = None) -> int:
    """Runs the job the environment describes; returns the exit status."""
    env = os.environ if environ is None else environ
    try:
        markers = MarkerWriter.from_env(env)
    except MarkerChannelError as exc:
        print(f"gpuprof worker: {exc}", file=sys.stderr)
        return EXIT_NO_CHANNEL
    signal.signal(signal.SIGTERM, _on_sigterm)
    with markers:
        try:
            check_identity(env.get(EXPECT_UID_ENV))  # before any job input is read
            limit_files(env.get(MAX_FILE_ENV))
            spec = read_spec(env.get(JOB_SPEC_ENV))
            run_workload(spec, markers, gpu_target(spec, env))
        except WorkerTerminated:
            _report(markers, "terminated by SIGTERM")
            return EXIT_TERMINATED
        except MarkerChannelError as exc:
            print(f"gpuprof worker: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except GpuprofError as exc:
            print(f"gpuprof worker: {exc}", file=sys.stderr)
            _report(markers, str(exc))
            return EXIT_FAILED
        except Exception as exc:
            traceback.print_exc()
            _report(markers, f"{type(exc).__name__}: {exc}")
            return EXIT_FAILED
    return EXIT_OK
