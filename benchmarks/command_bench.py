"""A program of the user's own, marked with gpuprof.markers, against the built-in llm job doing the same work.

    python3 benchmarks/command_bench.py [--simulate] [--prompts 8] [--new-tokens 128] [--json OUT]

Both run on one private gpuprofd (``gpuprof run``), one after the other, DVFS off (no GPU setting changes):

- the llm job: llama-3.2-1b with synthetic weights, bf16, the eager engine (transformers' ``generate``) at
  batch 1 on ``--prompts`` qa prompts, ``--new-tokens`` new tokens each (``ignore_eos``), after one warm-up
  request;
- the command job: a script written here as a user would write it. It builds the same model with
  transformers (the same configuration and seed), warms it up once, then calls ``model.generate`` once per
  prompt of the llm job: the same prompt length (in tokens), the same number of new tokens, greedy, at batch
  1. It marks each call as a request with its own instants (``gpuprof.markers.request(...,
  scheduled_ns=..., first_token_ns=..., last_token_ns=...)``), the first token's stamped by a streamer after
  ``torch.cuda.synchronize()``, as the llm job stamps it.

The work is the same: the same model, prompt lengths and tokens generated, through the same ``generate``.
It prints each job's energy per generated token (all of each request's energy over its new tokens) and its
decode energy per token (decode over the tokens after the first), each with its bound, their tokens per
second, and the difference against the two bounds together. With ``--simulate`` the model is the -tiny one
on the CPU and the GPU is simulated (SIMULATED): a check that both jobs run, not a comparison, as the llm
job's phases are stretched to the simulated clock (docs/simulated-gpu.md) and the program's are not; only a
real GPU compares them.
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

SCRIPT = """\
import json, os, sys, time
import torch, transformers
import gpuprof.markers as markers
from gpuprof.daemon.worker.llm.archs import arch_config    # the llm job's architecture, to match it exactly
from gpuprof.daemon.worker.llm.tokenizer import load_tokenizer

arch, dtype, new_tokens = sys.argv[1], getattr(torch, sys.argv[2]), int(sys.argv[3])
lengths = json.loads(sys.argv[4])
device = "cuda" if torch.cuda.is_available() else "cpu"
tokenizer = load_tokenizer()
special = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
config = arch_config(arch, len(tokenizer), *special)
torch.manual_seed(0)
with torch.device(device):
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
if device == "cuda":
    torch.backends.cuda.enable_cudnn_sdp(False)  # as gpuprof's own llm jobs do
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
simulated = os.environ.get("GPUPROF_SIMULATE") == "1"  # the simulated GPU: load it as gpuprof's workers do
if simulated:
    from gpuprof.sampler.sim import SimulatedNvml
    sim, index = SimulatedNvml(), int(os.environ["GPUPROF_SIM_GPU"])


class FirstToken:
    \"\"\"generate's streamer: the first put is the prompt, the second the first new token.\"\"\"

    def __init__(self):
        self.puts, self.first_ns = 0, None

    def put(self, value):
        self.puts += 1
        if self.puts == 2:
            sync()
            self.first_ns = time.monotonic_ns()

    def end(self):
        pass


def generate(length):
    ids = torch.randint(100, 8000, (1, length), device=device)
    streamer = FirstToken()
    started = time.monotonic_ns()
    with torch.inference_mode():
        model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, streamer=streamer,
        )
    sync()
    return started, streamer.first_ns, time.monotonic_ns()


generate(lengths[0])  # warm-up, unmarked
for i, length in enumerate(lengths):
    if simulated:
        sim.set_utilization(index, 100)
    started, first, ended = generate(length)
    if simulated:
        sim.set_utilization(index, 0)
    markers.request(
        i, input_tokens=length, output_tokens=new_tokens,
        scheduled_ns=started, first_token_ns=first, last_token_ns=ended,
    )
"""


def run_job(args: list[str], simulate: bool) -> dict[str, Any]:
    options = ["--json", *(["--simulate"] if simulate else [])]  # before a program's -- and arguments
    command = [sys.executable, "-m", "gpuprof.client.cli", "run", *options, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"gpuprof run failed ({done.returncode}): {done.stderr[-3000:]}")
    return dict(json.loads(done.stdout))


def figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """A job's requests summed: J per generated token and decode J per token after the first, with bounds."""
    tokens = sum(r["output_tokens"] for r in rows)
    decode_tokens = sum(r["output_tokens"] - 1 for r in rows)
    seconds = sum(r["decode_s"] for r in rows)
    return {
        "j_per_token": sum(r["energy_j"] for r in rows) / tokens,
        "bound": sum(r["energy_uncertainty_j"] for r in rows) / tokens,
        "decode_j_per_token": sum(r["decode_energy_j"] for r in rows) / decode_tokens,
        "decode_tokens_per_s": decode_tokens / seconds,
        "requests": len(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--prompts", type=int, default=8, help="requests of each job (batch 1)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per request")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    arch = "llama-3.2-1b-tiny" if args.simulate else "llama-3.2-1b"
    dtype = "float32" if args.simulate else "bfloat16"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "llm.yaml"
        spec.write_text(
            "name: builtin\nworkload: llm\ntimeout_s: 1800\nllm:\n"
            f"  model: {{arch: {arch}}}\n  dtype: {dtype}\n  tasks: [qa]\n  prompts: {args.prompts}\n"
            f"  batch_sizes: [1]\n  max_new_tokens: {args.new_tokens}\n  ignore_eos: true\n"
            "  warmup_requests: 1\n"
        )
        builtin = run_job([str(spec)], args.simulate)
        theirs_rows = sorted(builtin["requests"], key=lambda r: r.get("index", 0))
        lengths = [int(r["input_tokens"]) for r in theirs_rows]
        script = Path(tmp) / "user_generate.py"
        script.write_text(SCRIPT)
        command = [sys.executable, str(script), arch, dtype, str(args.new_tokens), json.dumps(lengths)]
        program = run_job(["--", *command], args.simulate)
    theirs, ours = figures(theirs_rows), figures(program["requests"])
    difference = ours["j_per_token"] - theirs["j_per_token"]
    within = abs(difference) <= ours["bound"] + theirs["bound"]
    tag = " (SIMULATED)" if args.simulate else ""
    title = f"Energy per generated token, {arch} batch 1, {len(lengths)} requests of {args.new_tokens} tokens"
    jobs = (("llm job (generate)", theirs), ("command job (generate, marked)", ours))
    table(title + tag, ["job", "mJ/token", "± mJ", "decode mJ/token", "decode tok/s", "requests"],
          [[name, f["j_per_token"] * 1e3, f["bound"] * 1e3, f["decode_j_per_token"] * 1e3,
            f["decode_tokens_per_s"], f["requests"]] for name, f in jobs])  # fmt: skip
    print(f"difference {difference * 1e3:+.3f} mJ/token ({difference / theirs['j_per_token']:+.2%}); "
          f"within the two bounds together: {'yes' if within else 'NO'}")  # fmt: skip
    report = {
        "simulated": args.simulate, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "model": arch, "input_tokens": lengths, "new_tokens": args.new_tokens,
        "llm_job": theirs, "command_job": ours, "difference_j_per_token": difference, "within_bounds": within,
        "wall_s": time.monotonic() - started,
    }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
