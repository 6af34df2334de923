"""A program of the user's own, marked with gpuprof.markers, against the built-in llm job doing the same work.

    python3 benchmarks/command_bench.py [--simulate] [--seconds 5] [--windows 8] [--json OUT]

Both run on one private gpuprofd (``gpuprof run``), one after the other, DVFS off (no GPU setting changes):

- the llm job: llama-3.2-1b with synthetic weights, bf16, steady-state decode at batch 1 on a 512-token
  context, ``decode_tokens`` 128 (docs/llm.md): energy per decode token from its ``steady_decode`` windows;
- the command job: a script written here as a user would write it: it builds the same model with
  transformers (the same configuration and seed), prefills a 512-token context, and marks each block of
  128 decode steps (``model(input_ids=token, past_key_values=cache)``) as a ``decode`` window of one
  request (``gpuprof.markers.window(..., sync=torch.cuda.synchronize)`` and ``markers.request``).

It prints each job's energy per decode token with its bound, and their difference against the two bounds
together. With ``--simulate`` the model is the -tiny one on the CPU and the GPU is simulated (SIMULATED):
a check that both jobs run, not a comparison, as the llm job's phases are stretched to the simulated clock
(docs/simulated-gpu.md) and the program's are not; only a real GPU compares them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sampler_bench import table  # benchmarks/, beside this file

CONTEXT, DECODE = 512, 128

SCRIPT = f"""\
import os, sys, time
import torch, transformers
import gpuprof.markers as markers
from gpuprof.daemon.worker.llm.archs import arch_config    # the llm job's architecture, to match it exactly
from gpuprof.daemon.worker.llm.tokenizer import load_tokenizer

arch, dtype, windows = sys.argv[1], getattr(torch, sys.argv[2]), int(sys.argv[3])
device = "cuda" if torch.cuda.is_available() else "cpu"
tokenizer = load_tokenizer()
special = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
config = arch_config(arch, len(tokenizer), *special)
torch.manual_seed(0)
with torch.device(device):
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
if device == "cuda":
    torch.backends.cuda.enable_cudnn_sdp(False)  # as gpuprof's own llm jobs do
sync = torch.cuda.synchronize if device == "cuda" else None
simulated = os.environ.get("GPUPROF_SIMULATE") == "1"  # the simulated GPU: load it as gpuprof's workers do
if simulated:
    from gpuprof.sampler.sim import SimulatedNvml
    sim, index = SimulatedNvml(), int(os.environ["GPUPROF_SIM_GPU"])
ids = torch.randint(100, 8000, (1, {CONTEXT}), device=device)
with torch.inference_mode():
    for i in range(windows + 1):  # the first is a warm-up, left unmarked
        out = model(input_ids=ids, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        if sync:
            sync()
        if simulated:
            sim.set_utilization(index, 100)
        with markers.window("decode", request=i, sync=sync) if i else markers.window("warmup"):
            for _ in range({DECODE}):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        if simulated:
            sim.set_utilization(index, 0)
        if i:
            markers.request(i, input_tokens=0, output_tokens={DECODE})
        del cache, out
"""


def run_job(args: list[str], simulate: bool) -> dict[str, Any]:
    options = ["--json", *(["--simulate"] if simulate else [])]  # before a program's -- and arguments
    command = [sys.executable, "-m", "gpuprof.client.cli", "run", *options, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"gpuprof run failed ({done.returncode}): {done.stderr[-3000:]}")
    return dict(json.loads(done.stdout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--seconds", type=float, default=5.0, help="the llm job's steady decode")
    parser.add_argument("--windows", type=int, default=8, help="the program's marked decode windows")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    arch = "llama-3.2-1b-tiny" if args.simulate else "llama-3.2-1b"
    dtype = "float32" if args.simulate else "bfloat16"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "llm.yaml"
        spec.write_text(
            "name: builtin\nworkload: llm\ntimeout_s: 1800\nllm:\n"
            f"  model: {{arch: {arch}}}\n  dtype: {dtype}\n"
            "  tasks: [qa]\n  prompts: 2\n  batch_sizes: [1]\n  max_new_tokens: 4\n  warmup_requests: 1\n"
            f"  steady_state: {{seconds: {args.seconds}, context_tokens: {CONTEXT}, "
            f"decode_tokens: {DECODE}}}\n"
        )
        builtin = run_job([str(spec)], args.simulate)
        script = Path(tmp) / "user_decode.py"
        script.write_text(SCRIPT)
        program = run_job(["--", sys.executable, str(script), arch, dtype, str(args.windows)], args.simulate)
    (steady,) = [s for s in builtin["llm"]["steady_state"] if s["phase"] == "decode"]
    rows = program["requests"]
    tokens = sum(r["output_tokens"] for r in rows)
    joules = sum(r["energy_j"] for r in rows)
    bound = sum(r["energy_uncertainty_j"] for r in rows)
    seconds = sum(r["decode_s"] for r in rows)
    ours = {"j_per_token": joules / tokens, "bound": bound / tokens, "tokens_per_s": tokens / seconds}
    theirs = {"j_per_token": steady["j_per_token"], "bound": steady["j_per_token_uncertainty"],
              "tokens_per_s": steady["tokens_per_s"]}  # fmt: skip
    difference = ours["j_per_token"] - theirs["j_per_token"]
    within = abs(difference) <= ours["bound"] + theirs["bound"]
    tag = " (SIMULATED)" if args.simulate else ""
    table(f"Energy per decode token, {arch} batch 1, {CONTEXT}-token context{tag}",
          ["job", "mJ/token", "± mJ", "tok/s", "windows"],
          [["llm job, steady_decode", theirs["j_per_token"] * 1e3, theirs["bound"] * 1e3,
            theirs["tokens_per_s"], steady["windows"]],
           ["command job, marked", ours["j_per_token"] * 1e3, ours["bound"] * 1e3, ours["tokens_per_s"],
            len(rows)]])  # fmt: skip
    print(f"difference {difference * 1e3:+.3f} mJ/token ({difference / theirs['j_per_token']:+.2%}); "
          f"within the two bounds together: {'yes' if within else 'NO'}")  # fmt: skip
    report = {
        "simulated": args.simulate, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "model": arch, "llm_job": theirs, "command_job": ours,
        "difference_j_per_token": difference, "within_bounds": within, "wall_s": time.monotonic() - started,
    }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
