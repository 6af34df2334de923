"""Read-only probe of the energy counter: how often its value changes, how long its call blocks (sleeping or
spinning), and when the value a read returns was current; beside it, the instant-power field's updates, the
clock-event-reasons read's stalls and whether NVML reports memory power.

    python benchmarks/counter_probe.py [--simulate] [--gpu 0] [--seconds 12] [--json OUT]

The GPU runs a square-wave load whose edges are timed on the host (bf16 matmuls, then idle; on the simulated
GPU its utilization is switched). The counter's energy between two observed changes is then fitted against
that load shifted by a delay d: the d that explains the increments best is how long before its observation
each update's value was current. Builds benchmarks/counter_probe.c with the machine's C compiler; nothing is
set on the GPU (the simulated GPU's utilization excepted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gpuprof.sampler.library import resolve

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parent / "sampler" / "include"
# Busy and idle spans of random lengths (a fixed seed): no period the counter's could alias with.
SPANS_S = (0.02, 0.15)


def build(workdir: str) -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        sys.exit("no C compiler (cc or gcc) found")
    binary = os.path.join(workdir, "counter_probe")
    source = str(HERE / "counter_probe.c")
    subprocess.run([compiler, "-O2", f"-I{INCLUDE}", source, "-o", binary, "-ldl", "-lpthread"], check=True)
    return binary


def square_wave(seconds: float, simulate: bool, gpu: int, edges: list[tuple[int, int]]) -> None:
    """Busy, then idle, each for a random span in SPANS_S, until ``seconds`` are up; appends each busy span
    (host CLOCK_MONOTONIC)."""
    end = time.monotonic() + seconds
    spans = np.random.default_rng(7).uniform(*SPANS_S, size=(100_000, 2))
    if simulate:
        from gpuprof.sampler.sim import SimulatedNvml

        sim = SimulatedNvml()
        try:
            for busy_s, idle_s in spans:
                if time.monotonic() >= end:
                    break
                start = time.monotonic_ns()
                sim.set_utilization(gpu, 100)
                time.sleep(busy_s)
                sim.set_utilization(gpu, 0)
                edges.append((start, time.monotonic_ns()))
                time.sleep(idle_s)
        finally:
            sim.set_utilization(gpu, 0)
        return
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(20):  # warm: kernels loaded, clocks up
        torch.mm(a, b)
    torch.cuda.synchronize()
    time.sleep(0.5)
    for busy_s, idle_s in spans:
        if time.monotonic() >= end:
            break
        torch.cuda.synchronize()
        start = time.monotonic_ns()
        while time.monotonic_ns() - start < busy_s * 1e9:
            torch.mm(a, b)
            torch.cuda.synchronize()  # edges within one matmul (~2 ms) of the host's clock
        edges.append((start, time.monotonic_ns()))
        time.sleep(idle_s)


def run_probe(
    binary: str, library: str, gpu: int, seconds: float, mode: str, load: bool, simulate: bool, workdir: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[int, int]]]:
    energy_csv, power_csv = os.path.join(workdir, f"e-{mode}.csv"), os.path.join(workdir, f"p-{mode}.csv")
    edges: list[tuple[int, int]] = []
    loader = (
        threading.Thread(target=square_wave, args=(seconds + 0.5, simulate, gpu, edges)) if load else None
    )
    if loader:
        loader.start()
        time.sleep(1.5 if not simulate else 0.2)
    subprocess.run(
        [binary, library, str(gpu), str(seconds), energy_csv, power_csv, mode],
        check=True,
        capture_output=True,
    )
    if loader:
        loader.join()
    return pd.read_csv(energy_csv), pd.read_csv(power_csv), edges


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def changes(reads: pd.DataFrame) -> pd.DataFrame:
    """Each observed counter change: the read before (unchanged) and the read that saw it."""
    good = reads[reads["ret"] == 0].reset_index(drop=True)
    changed = np.flatnonzero(np.diff(good["energy_mj"].to_numpy()) != 0) + 1
    rows = []
    for i in changed:
        before, after = good.iloc[i - 1], good.iloc[i]
        rows.append(
            {
                "prev_start": int(before["t_start_ns"]),
                "prev_end": int(before["t_end_ns"]),
                "start": int(after["t_start_ns"]),
                "end": int(after["t_end_ns"]),
                "mj": int(after["energy_mj"]),
                "prev_mj": int(before["energy_mj"]),
                "gap_ns": int(after["t_start_ns"] - before["t_end_ns"]),
            }
        )
    return pd.DataFrame(rows)


def busy_overlap(edges: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Seconds of busy time inside each [t0, t1]."""
    out = np.zeros(t0.size)
    for start, end in edges:
        out += np.clip(np.minimum(t1, end) - np.maximum(t0, start), 0, None)
    return out / 1e9


def fit_delay(ch: pd.DataFrame, edges: list[tuple[int, int]], latch: str) -> dict[str, float]:
    """The delay d (ms) for which each increment best matches the load between (L_prev - d, L - d]."""
    if len(ch) < 10 or not edges:
        return {}
    e = np.array(edges, dtype=np.int64)
    latch_ns = {
        "start": ch["start"].to_numpy(),
        "end": ch["end"].to_numpy(),
        "middle": (ch["start"].to_numpy() + ch["end"].to_numpy()) // 2,
    }[latch]
    inc = (ch["mj"].to_numpy()[1:] - ch["mj"].to_numpy()[:-1]) / 1000.0
    l0, l1 = latch_ns[:-1], latch_ns[1:]
    inside = (l0 > e[0, 0] + 2e8) & (l1 < e[-1, 1] - 2e8)
    best = None
    for d_ms in np.arange(-20.0, 120.0, 0.25):
        d = int(d_ms * 1e6)
        t0, t1 = l0[inside] - d, l1[inside] - d
        total = (t1 - t0) / 1e9
        busy = busy_overlap(e, t0, t1)
        design = np.column_stack([total - busy, busy])  # idle watts, busy watts
        coef, *_ = np.linalg.lstsq(design, inc[inside], rcond=None)
        rss = float(np.sum((design @ coef - inc[inside]) ** 2))
        if best is None or rss < best[0]:
            best = (rss, d_ms, coef)
    assert best is not None
    rss, d_ms, coef = best
    n = int(inside.sum())
    return {
        "delay_ms": float(d_ms),
        "idle_w": float(coef[0]),
        "busy_w": float(coef[1]),
        "rms_residual_j": float(np.sqrt(rss / max(n, 1))),
        "increments": n,
    }


def summarize(reads: pd.DataFrame, power: pd.DataFrame, edges: list[tuple[int, int]]) -> dict[str, object]:
    dur = (reads["t_end_ns"] - reads["t_start_ns"]).to_numpy() / 1e3
    cpu = reads["cpu_ns"].to_numpy() / 1e3
    ch = changes(reads)
    out: dict[str, object] = {
        "reads": len(reads),
        "failed_reads": int((reads["ret"] != 0).sum()),
        "call_us": {"p50": pct(dur, 50), "p99": pct(dur, 99), "max": float(dur.max()) if dur.size else None},
        "cpu_us_per_call": {"p50": pct(cpu, 50), "p99": pct(cpu, 99)},
        "cpu_share_of_call": float(cpu.sum() / dur.sum()) if dur.sum() else None,
        "reads_per_s": float(len(reads) / ((reads["t_end_ns"].iloc[-1] - reads["t_start_ns"].iloc[0]) / 1e9)),
    }
    if len(ch):
        mid = ((ch["start"] + ch["end"]) // 2).to_numpy()
        period = np.diff(mid) / 1e6
        steps = np.diff(ch["mj"].to_numpy())
        out["changes"] = len(ch)
        out["update_period_ms"] = {
            "p10": pct(period, 10),
            "p50": pct(period, 50),
            "p90": pct(period, 90),
            "min": float(period.min()) if period.size else None,
            "max": float(period.max()) if period.size else None,
        }
        out["bracket_ms_p50"] = pct((ch["end"] - ch["prev_start"]).to_numpy() / 1e6, 50)
        out["increment_mj_p50"] = pct(steps, 50)
        out["fit"] = {latch: fit_delay(ch, edges, latch) for latch in ("start", "middle", "end")}
        if "field_latency_us" in reads and (reads["field_latency_us"] != 0).any():
            lat = reads["field_latency_us"].to_numpy()
            out["field_latency_us"] = {"p50": pct(lat, 50), "p99": pct(lat, 99)}
    pw = power["power_mw"].to_numpy()
    t = power["t_ns"].to_numpy()
    moved = np.flatnonzero(np.diff(pw) != 0) + 1
    if moved.size > 2:
        upd = t[moved]
        out["instant_power_update_ms"] = {
            "p50": pct(np.diff(upd) / 1e6, 50),
            "p90": pct(np.diff(upd) / 1e6, 90),
        }
        if len(ch):
            mid = ((ch["start"] + ch["end"]) // 2).to_numpy()
            idx = np.clip(np.searchsorted(mid, upd), 1, mid.size - 1)
            offset = upd - mid[idx - 1]
            out["instant_update_after_counter_ms"] = {
                "p10": pct(offset / 1e6, 10),
                "p50": pct(offset / 1e6, 50),
                "p90": pct(offset / 1e6, 90),
            }
    reasons = (power["reasons_end_ns"] - power["t_ns"]).to_numpy() / 1e3
    stalls = reasons > 1000
    out["power_and_reasons_read_us"] = {
        "p50": pct(reasons, 50),
        "p99": pct(reasons, 99),
        "stalls_over_1ms": int(stalls.sum()),
        "stall_mean_us": float(reasons[stalls].mean()) if stalls.any() else 0.0,
    }
    mem_ok = power["memory_ret"].to_numpy() == 0
    out["memory_power"] = {
        "supported": bool(mem_ok.any()),
        "mean_w": float(power["memory_power_mw"][mem_ok].mean() / 1000) if mem_ok.any() else None,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--json")
    parser.add_argument("--raw", help="directory for the raw CSV files")
    args = parser.parse_args()
    library = resolve(simulate=args.simulate)
    result: dict[str, object] = {
        "simulated": library.simulated,
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "load": f"busy, then idle, each for a random {SPANS_S[0] * 1e3:g}-{SPANS_S[1] * 1e3:g} ms",
    }
    with tempfile.TemporaryDirectory() as workdir:
        binary = build(workdir)
        for name, mode, load, seconds in (
            ("idle", "energy", False, args.seconds / 3),
            ("random_load", "energy", True, args.seconds),
            ("random_load_field83", "field", True, args.seconds / 2),
        ):
            reads, power, edges = run_probe(
                binary, library.path, args.gpu, seconds, mode, load, args.simulate, workdir
            )
            result[name] = summarize(reads, power, edges)
            if args.raw:
                Path(args.raw).mkdir(parents=True, exist_ok=True)
                reads.to_csv(Path(args.raw) / f"{name}-energy.csv", index=False)
                power.to_csv(Path(args.raw) / f"{name}-power.csv", index=False)
                pd.DataFrame(edges, columns=["busy_start_ns", "busy_end_ns"]).to_csv(
                    Path(args.raw) / f"{name}-edges.csv", index=False
                )
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
