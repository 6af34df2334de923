"""gpuprofd: the daemon that owns a node's GPUs, samples them continuously and runs profiling jobs."""
