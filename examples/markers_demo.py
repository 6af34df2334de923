"""A program of your own, marked for gpuprof: requests with a prefill and a decode window each, at every
point of the job's clock sweep. Run it under gpuprof (examples/command-sweep.yaml):

    gpuprof run examples/command-sweep.yaml --allow-dvfs

or alone (python3 examples/markers_demo.py): gpuprof.markers then does nothing. On a CUDA GPU the work is
bf16 matmuls (a long "prefill" burst, then small "decode" steps); elsewhere numpy on the CPU.
"""

from __future__ import annotations

import time

import gpuprof.markers as markers

REQUESTS, DECODE_STEPS = 8, 32


def work() -> tuple[object, object]:
    """(prefill, decode step) callables on the best device here, and the sync that finishes their work."""
    try:
        import torch

        if torch.cuda.is_available():
            big = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
            small = torch.randn(64, 8192, device="cuda", dtype=torch.bfloat16)
            return (lambda: [big @ big for _ in range(8)], lambda: small @ big), torch.cuda.synchronize
    except ImportError:
        pass
    import numpy as np

    big, small = np.random.rand(512, 512), np.random.rand(8, 512)
    return (lambda: [big @ big for _ in range(8)], lambda: small @ big), None


def main() -> None:
    (prefill, step), sync = work()
    for mhz in markers.sweep():  # once, or once per clock with points: marked
        markers.status(f"{REQUESTS} requests at {mhz or 'the default'} MHz")
        for i in range(REQUESTS):
            with markers.window("prefill", request=i, sync=sync):
                prefill()
            with markers.window("decode", request=i, sync=sync):
                for _ in range(DECODE_STEPS):
                    step()
            markers.request(i, input_tokens=512, output_tokens=DECODE_STEPS + 1)
        time.sleep(0.2)  # the sensor's lag: the next point's power must not start in this one's window


if __name__ == "__main__":
    main()
