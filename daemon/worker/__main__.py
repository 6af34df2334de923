"""Entry point of ``python -m gpuprof.daemon.worker``."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
