"""LLM inference benchmark: the study's models under gpuprofd, and what 1 kHz sampling costs inference.

    python3 benchmarks/llm_bench.py [--simulate] [--json OUT] [--only study overhead engines]
        [--models llama-3.2-1b llama-3.2-3b mistral-7b-v0.1] [--prompts 16] [--seconds 5]
        [--engines compiled eager] [--batch-sizes 1 8]

``study`` runs one llm job through a private gpuprofd (``gpuprof run``, DVFS off: no clock or power
setting is changed): the models with synthetic weights in bf16, the built-in qa and factual sets, batch 1
and 8 (``--batch-sizes``), then steady-state prefill and decode. The job's progress lines show as it
runs. It prints tokens/s, energy per prefill and decode token (steady state, energy counter) and the spread
of per-request energy.

``engines`` runs the same job once per engine (``llm.engine: eager`` and ``compiled``, docs/llm.md; by
default compiled first, ``--engines`` picks and orders them) and compares their steady-state decode:
tokens/s, energy per token and the share of the memory-bandwidth bound (batch x bandwidth / weight bytes),
side by side from one run of this script. An engine whose job fails is reported (``errors`` in the JSON)
and the others still run.

``overhead`` runs steady-state decode (batch 1) and prefill (batch 8, 512 tokens) of llama-3.2-1b in this
process, in blocks alternating between a gpuprofd sampling every GPU at 1 kHz and the same gpuprofd
stopped (SIGSTOP), in the order ON OFF OFF ON repeated. Each round gives one paired slowdown (its two ON
blocks against its two OFF blocks, so drift within a round cancels); the median over rounds is reported
with its interquartile range.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sampler_bench import table  # benchmarks/, beside this file

MODELS = ["llama-3.2-1b", "llama-3.2-3b", "mistral-7b-v0.1"]


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1e3


def device_info(simulate: bool) -> dict[str, Any]:
    """The GPU and driver, read through pynvml (or the simulated library)."""
    from gpuprof.sampler.sim import SimulatedNvml

    if simulate:
        return {"simulated": True, "gpus": [g.name for g in SimulatedNvml().status()]}
    import pynvml

    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        return {"simulated": False, "gpus": names, "driver": pynvml.nvmlSystemGetDriverVersion()}
    finally:
        pynvml.nvmlShutdown()


def study(
    models: list[str], prompts: int, seconds: float, simulate: bool, out_dir: Path, engine: str = "eager",
    tasks: tuple[str, ...] = ("qa", "factual"), batch_sizes: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:  # fmt: skip
    names = [f"{m}-tiny" if simulate else m for m in models]
    spec = out_dir / f"study-{engine}.yaml"
    spec.write_text(
        f"name: llm-bench-{engine}\nworkload: llm\ntimeout_s: 3000\nllm:\n"
        f"  models: [{', '.join('{arch: ' + n + '}' for n in names)}]\n  engine: {engine}\n"
        f"  dtype: {'float32' if simulate else 'bfloat16'}\n"
        f"  tasks: [{', '.join(tasks)}]\n  prompts: {prompts}\n"
        f"  batch_sizes: [{', '.join(map(str, batch_sizes))}]\n"
        "  max_new_tokens: 32\n  ignore_eos: true\n  warmup_requests: 8\n"
        f"  steady_state: {{seconds: {seconds}, context_tokens: 512, decode_tokens: 256}}\n"
    )
    command = [sys.executable, "-m", "gpuprof.client.cli", "run", str(spec), "--json"]
    command += ["--simulate"] if simulate else []
    started = time.monotonic()
    # the job's progress (gpuprof run's stderr) passes through, so a long compile or load shows as it runs
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=3000)
    if done.returncode != 0:
        raise RuntimeError(f"gpuprof run failed ({done.returncode}): see its messages above")
    job = json.loads(done.stdout)
    llm = job["llm"]
    points = [
        [p["model"], p["task"], p["batch_size"], p["requests"], p["output_tokens_per_s"],
         _ms(p["ttft_s_median"]), _ms(p["tpot_s_median"]), p["energy_per_request_j_mean"],
         p["energy_per_request_cv"], p["short_window_fraction"], p["observed_sm_clock_mhz_median"]]
        for p in llm["points"]
    ]  # fmt: skip
    table(f"Points, engine {engine} (per-request energy: {llm['energy_method']})",
          ["model", "task", "batch", "req", "out tok/s", "TTFT ms", "TPOT ms", "J/req", "CV", "short",
           "SM MHz"], points)  # fmt: skip
    by_model = {m["id"]: m["model"] for m in llm["models"]}
    steady = [
        [by_model.get(s["id"].split(".")[0], s["id"]), s["batch_size"], s["phase"], s["tokens_per_s"],
         _ms(s["j_per_token"]), _ms(s["j_per_token_uncertainty"]), s["energy_source"], s["mean_power_w"],
         s["observed_sm_clock_mhz_median"]]
        for s in llm["steady_state"]
    ]  # fmt: skip
    table(f"Steady state, engine {engine} (512-token contexts)",
          ["model", "batch", "phase", "tok/s", "mJ/token", "± mJ", "source", "mean W", "SM MHz"],
          steady)  # fmt: skip
    for model in llm["models"]:
        if model.get("engine") == "compiled":
            graphs = model.get("cuda_graphs")
            print(f"  {model['model']}: {model.get('compile_mode')} mode, CUDA graphs: {graphs}")
            for batch, tried in (model.get("compile_trials") or {}).items():
                print(f"    batch {batch}, each mode's captured step: {tried}")
    return {
        "wall_s": time.monotonic() - started,
        "simulated": job["simulated"],
        "job_energy_counter_j": job["energy_counter_j"],
        "models": llm["models"],
        "points": llm["points"],
        "steady_state": llm["steady_state"],
        "requests": len(job.get("requests") or []),
    }


def engines(
    models: list[str], prompts: int, seconds: float, simulate: bool, out_dir: Path,
    tasks: tuple[str, ...] = ("qa", "factual"), which: tuple[str, ...] = ("compiled", "eager"),
    batch_sizes: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:  # fmt: skip
    """The same job under each engine, one after the other; their steady decode side by side."""
    runs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for engine in which:  # compiled first by default: a failure there is known before eager's long run
        try:
            runs[engine] = study(models, prompts, seconds, simulate, out_dir, engine, tasks, batch_sizes)
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            errors[engine] = str(exc)
            print(f"engine {engine} failed: {exc}", file=sys.stderr, flush=True)
    if len(runs) < 2:
        return {"runs": runs, "errors": errors, "decode": []}
    decode = {
        engine: {(s["model"], s["batch_size"]): s for s in run["steady_state"] if s["phase"] == "decode"}
        for engine, run in runs.items()
    }
    rows = []
    for key, eager in decode["eager"].items():
        compiled = decode["compiled"].get(key)
        if compiled is None:
            continue
        rows.append([
            key[0], key[1], eager["tokens_per_s"], compiled["tokens_per_s"],
            compiled["tokens_per_s"] / eager["tokens_per_s"], _ms(eager["j_per_token"]),
            _ms(compiled["j_per_token"]), eager["bandwidth_bound_share"], compiled["bandwidth_bound_share"],
        ])  # fmt: skip
    table("Steady decode by engine (512-token contexts; energy per token: fused counter estimate)",
          ["model", "batch", "eager tok/s", "compiled tok/s", "speedup", "eager mJ/tok", "compiled mJ/tok",
           "eager of bound", "compiled of bound"], rows)  # fmt: skip
    kv_cache = {m["model"]: m.get("kv_cache") for m in runs["compiled"]["models"]}
    return {"runs": runs, "errors": errors, "decode": rows, "compiled_kv_cache": kv_cache}


class _Count:
    """A stand-in marker writer that keeps the steady windows' token counts and times."""

    def __init__(self) -> None:
        self.begun: dict[str, float] = {}
        self.rates: list[tuple[str, float]] = []

    def begin(self, name: str, **attrs: Any) -> None:
        self.begun[attrs["id"]] = time.monotonic()

    def end(self, name: str, **attrs: Any) -> None:
        self.rates.append((name, attrs["tokens"] / (time.monotonic() - self.begun[attrs["id"]])))

    def status(self, text: str) -> None:
        pass


def _start_daemon(root: Path, simulate: bool) -> subprocess.Popen[bytes]:
    from gpuprof.client import Client

    endpoint = f"ipc://{root}/d.sock"
    command = [sys.executable, "-m", "gpuprof.daemon.cli", "serve", "--endpoint", endpoint]
    command += ["--state-dir", str(root / "state"), *(["--simulate"] if simulate else [])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), Client(endpoint, timeout_s=1.0) as client:
            client.hello()
            return process
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("gpuprofd did not start")


def overhead(simulate: bool, seconds: float, rounds: int, out_dir: Path) -> dict[str, Any]:
    from gpuprof.client.wire.llm_spec import LlmParams, ModelRef, SteadyState
    from gpuprof.daemon.worker.llm import steady
    from gpuprof.daemon.worker.llm.engine import Device, load_model
    from gpuprof.daemon.worker.workloads import GpuTarget

    arch = "llama-3.2-1b-tiny" if simulate else "llama-3.2-1b"
    params = LlmParams(models=(ModelRef("arch", arch),), dtype="float32" if simulate else "bfloat16")
    device = Device(None if simulate else GpuTarget(simulated=False))
    lm = load_model(params.models[0], params, device)
    corpus = ["The river carries silt to the delta, where it settles into new land over centuries."] * 50
    decode_ids = steady.context_ids(lm, 1, 512, corpus)
    prefill_ids = steady.context_ids(lm, 8, 512, corpus)
    settings = SteadyState(seconds=seconds, context_tokens=512, decode_tokens=256)
    daemon = _start_daemon(out_dir, simulate)
    rates: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
    try:
        steady.run_decode(lm, decode_ids, SteadyState(2.0, 512, 256), _Count(), "warm")  # type: ignore[arg-type]
        for block in ["on", "off", "off", "on"] * rounds:
            os.kill(daemon.pid, signal.SIGCONT if block == "on" else signal.SIGSTOP)
            time.sleep(0.5)
            count = _Count()
            steady.run_decode(lm, decode_ids, settings, count, "d")  # type: ignore[arg-type]
            steady.run_prefill(lm, prefill_ids, settings, count, "p")  # type: ignore[arg-type]
            for name, rate in count.rates:
                rates[block].setdefault(name, []).append(rate)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
        daemon.terminate()
        daemon.wait(timeout=30)
    rows, out = [], {}
    for name in ("steady_decode", "steady_prefill"):
        on, off = rates["on"][name], rates["off"][name]
        # Each ON OFF OFF ON round gives one paired figure: drift within a round cancels.
        per_round = [
            (1 - (on[2 * r] + on[2 * r + 1]) / (off[2 * r] + off[2 * r + 1])) * 100
            for r in range(len(on) // 2)
        ]
        q1, median, q3 = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
        rows.append([name, statistics.median(on), statistics.median(off), f"{median:+.3f} %",
                     f"[{q1:+.2f}, {q3:+.2f}] %", len(per_round)])  # fmt: skip
        out[name] = {"on_tokens_per_s": on, "off_tokens_per_s": off, "slowdown_pct_per_round": per_round,
                     "slowdown_pct_median": median, "slowdown_pct_iqr": [q1, q3]}  # fmt: skip
    table(f"Sampling overhead ({arch}; decode batch 1, prefill batch 8 x 512; medians of blocks)",
          ["phase", "tok/s sampling 1 kHz", "tok/s daemon stopped", "slowdown (median)", "IQR", "rounds"],
          rows)  # fmt: skip
    return {"model": arch, "block_s": seconds, **out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--simulate", action="store_true", help="the simulated GPU and -tiny models (a dry run)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["study", "overhead", "engines"],
        default=["study", "overhead", "engines"],
    )
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tasks", nargs="+", default=["qa", "factual"], help="study and engines: the tasks")
    parser.add_argument(
        "--engines", nargs="+", choices=["compiled", "eager"], default=["compiled", "eager"],
        help="engines: which to run, in this order",
    )  # fmt: skip
    parser.add_argument(
        "--batch-sizes", nargs="+", type=int, default=[1, 8],
        help="study and engines: the batch sizes (fewer compile faster: the compiled engine compiles each)",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=5.0, help="each steady-state phase, and each block")
    parser.add_argument("--rounds", type=int, default=3, help="ON OFF OFF ON rounds of the overhead section")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "device": device_info(args.simulate),
    }
    with tempfile.TemporaryDirectory(prefix="gpuprof-llm-bench-") as tmp:
        if "study" in args.only:
            report["study"] = study(
                args.models, args.prompts, args.seconds, args.simulate, Path(tmp),
                batch_sizes=tuple(args.batch_sizes),
            )  # fmt: skip
        if "engines" in args.only:
            report["engines"] = engines(
                args.models, args.prompts, args.seconds, args.simulate, Path(tmp), tuple(args.tasks),
                tuple(args.engines), tuple(args.batch_sizes),
            )  # fmt: skip
        if "overhead" in args.only:
            report["overhead"] = overhead(args.simulate, args.seconds, args.rounds, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
