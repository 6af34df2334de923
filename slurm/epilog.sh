#!/bin/sh
# gpuprof's Slurm node epilog (docs/slurm.md). In slurm.conf: Epilog=/etc/gpuprof/slurm-epilog.sh
# Cancels the ending job's gpuprof jobs and writes its GPU energy into its AdminComment. Always exits 0: a
# failing epilog drains the node; problems are said on stderr (slurmd's log).
"${GPUPROF:-gpuprof}" slurm epilog || true
exit 0
