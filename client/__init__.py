"""gpuprof's clients: the ``gpuprof`` command line."""
