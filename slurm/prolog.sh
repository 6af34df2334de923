#!/bin/sh
# gpuprof's Slurm node prolog (docs/slurm.md). In slurm.conf: Prolog=/etc/gpuprof/slurm-prolog.sh
# Records which user and GPUs the starting job has, for gpuprofd. Always exits 0: a failing prolog drains
# the node; problems are said on stderr (slurmd's log).
"${GPUPROF:-gpuprof}" slurm prolog || true
exit 0
