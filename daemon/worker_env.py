"""How gpuprofd starts a job's worker, named once for both sides: the module it runs and the environment
variables it sets (daemon/server/jobs.py) and the worker reads (daemon/worker/main.py)."""

from __future__ import annotations

WORKER_MODULE = "gpuprof.daemon.worker"  # run as ``python -m``
JOB_SPEC_ENV = "GPUPROF_JOB_SPEC"  # path of a JSON file holding JobSpec.to_dict()
MARKER_FD_ENV = "GPUPROF_MARKER_FD"  # the inherited AF_UNIX SOCK_SEQPACKET socket for markers
MAX_FILE_ENV = "GPUPROF_WORKER_MAX_FILE_BYTES"  # RLIMIT_FSIZE for the job
EXPECT_UID_ENV = "GPUPROF_WORKER_UID"  # the uid a root daemon dropped this worker to
SIMULATE_ENV = "GPUPROF_SIMULATE"  # "1": run on the simulated GPU
SIM_GPU_ENV = "GPUPROF_SIM_GPU"  # which simulated GPU
SIM_STATE_ENV = "GPUPROF_SIM_STATE"  # the simulated GPU's state file, as the daemon sees it
