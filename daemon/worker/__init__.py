"""The worker role: ``python -m gpuprof.daemon.worker`` runs one job's workload as its user and reports its
phases on the marker channel (main.py; workloads/, llm/)."""
