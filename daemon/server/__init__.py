"""gpuprofd's server role: the sockets and their loop (daemon.py), request handling, the job store and runner,
clock control, identities and limits."""
