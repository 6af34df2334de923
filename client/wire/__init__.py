"""The contract between gpuprof's clients and gpuprofd: what either side may say and what it means.

- ``protocol``: the versioned msgpack messages, as pure functions on bytes (docs/protocol.md).
- ``jobspec`` (with ``spec_schema``, ``llm_spec``, ``dvfs_spec``, ``command_spec``, ``presets``): job specs,
  read strictly from YAML or from the data a client submits (docs/jobspec.md); ``presets``: the study's
  datasets by name (docs/llm.md).
- ``slurm_record``: the record gpuprof's Slurm prolog writes for gpuprofd (docs/slurm.md).
- ``states``: a job's states and the moves between them.
- ``errors``: every error a user can see, and the one table of the exit codes the commands return.
- ``command``: running a click command line with those errors and exit codes.

It imports nothing of the daemon or of the rest of the client, and of the sampler below it only its errors
and its file reader: the daemon and the clients both stand on it (tests/unit/test_layers.py holds the
rule).
"""
