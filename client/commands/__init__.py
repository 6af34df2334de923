"""One module per ``gpuprof`` command."""
