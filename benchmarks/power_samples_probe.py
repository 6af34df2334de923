"""Read-only probe of NVML's sample buffers (``nvmlDeviceGetSamples``): how often the driver records a
total-power sample, on which clock its timestamps are, how late a sample can be read, and which span of the
load each sample's value describes; beside them, the instant-power field and the energy counter.

    python benchmarks/power_samples_probe.py [--gpu 0] [--seconds 12] [--json OUT] [--raw OUT.npz]
    python benchmarks/power_samples_probe.py --from OUT.npz      # the analysis again, from a saved run

The GPU runs a square-wave load whose edges are timed on the host (bf16 matmuls, then idle, each for a
random 20-150 ms). Each power sample is then fitted as the mean of the load over a span of ``w`` ms ending
``d`` ms before its timestamp; the (d, w) that explain the samples best say what a sample measures. The
integral of the samples is compared with the energy counter over the same span, and each ~100 ms period
between two of the counter's updates with what the samples alone, and the instant-power field alone, say
of it. Nothing is set on the GPU.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import numpy as np
import pynvml
from counter_probe import busy_overlap  # benchmarks/, beside this file

SPANS_S = (0.02, 0.15)
COUNTER_DELAY_S = 0.009  # an update's value is current ~9 ms before the read shows it (counter_probe.py)
VALUE = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}
KINDS = {
    "total_power": pynvml.NVML_TOTAL_POWER_SAMPLES,
    "gpu_utilization": pynvml.NVML_GPU_UTILIZATION_SAMPLES,
    "module_power": getattr(pynvml, "NVML_MODULE_POWER_SAMPLES", 8),
}


def square_wave(seconds: float, gpu: int, edges: list[tuple[float, float]], ready: threading.Event) -> None:
    import torch

    dev = torch.device("cuda", gpu)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(20):
        a @ b
    torch.cuda.synchronize(dev)
    start = time.monotonic()
    for _ in range(50):
        a @ b
    torch.cuda.synchronize(dev)
    matmul_s = (time.monotonic() - start) / 50
    time.sleep(1.0)
    ready.set()
    spans = np.random.default_rng(7).uniform(*SPANS_S, size=(100_000, 2))
    end = time.monotonic() + seconds
    for busy_s, idle_s in spans:
        if time.monotonic() >= end:
            break
        t0 = time.monotonic()
        for _ in range(max(1, int(busy_s / matmul_s))):
            a @ b
        torch.cuda.synchronize(dev)
        edges.append((t0, time.monotonic()))
        time.sleep(idle_s)


def busy_fraction(edges: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """The share of each span [t0, t1] (s) that the load was busy."""
    return busy_overlap(edges * 1e9, t0 * 1e9, t1 * 1e9) / np.maximum(t1 - t0, 1e-9)


def periods(counter: np.ndarray, sources: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Each period between two of the counter's updates (each update at the middle of the two reads around
    its change, less COUNTER_DELAY_S), against the integral of each source's values placed at the middles of
    the spans they average (linear between them): rms, mean and p90 of |error| in J."""
    mid, joules = (counter[:, 0] + counter[:, 1]) / 2, counter[:, 2]
    changed = np.flatnonzero(np.diff(joules) != 0) + 1
    t = (mid[changed - 1] + mid[changed]) / 2 - COUNTER_DELAY_S
    half = (counter[changed, 1] - counter[changed - 1, 0]) / 2
    out: dict[str, Any] = {"updates": int(t.size), "update_half_width_ms_p50": float(np.median(half) * 1e3)}
    for name, (at, watts) in sources.items():
        errors = []
        for k in range(t.size - 1):
            if t[k] < at[0] or t[k + 1] > at[-1]:
                continue
            grid = np.linspace(t[k], t[k + 1], 201)
            errors.append(
                np.trapezoid(np.interp(grid, at, watts), grid) - (joules[changed[k + 1]] - joules[changed[k]])
            )
        e = np.array(errors)
        out[name] = {"periods": int(e.size)}
        if e.size:
            out[name].update(rms_j=float(np.sqrt(np.mean(e**2))), mean_j=float(e.mean()),
                             p90_abs_j=float(np.percentile(np.abs(e), 90)))  # fmt: skip
    return out


def fit(edges: np.ndarray, ts: np.ndarray, watts: np.ndarray) -> dict[str, Any]:
    """The (delay, span) in ms that best explain the samples as the mean of the load over a span."""
    best: dict[str, Any] = {}
    inside = (ts > edges[0, 0] + 0.3) & (ts < edges[-1, 1])
    ts, watts = ts[inside], watts[inside]
    if ts.size < 20:
        return {"samples": int(ts.size)}
    for d in np.arange(-20, 41, 1.0):
        for w in (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100):
            frac = busy_fraction(edges, ts - (d + w) / 1e3, ts - d / 1e3)
            design = np.column_stack([np.ones_like(frac), frac])
            coef, *_ = np.linalg.lstsq(design, watts, rcond=None)
            rms = float(np.sqrt(np.mean((design @ coef - watts) ** 2)))
            if not best or rms < best["rms_w"]:
                best = {"delay_ms": float(d), "span_ms": float(w), "rms_w": rms,
                        "idle_w": float(coef[0]), "busy_w": float(coef[0] + coef[1])}  # fmt: skip
    best["samples"] = int(ts.size)
    return best


def collect(gpu: int, seconds: float, poll_ms: float) -> dict[str, Any]:
    """Runs the load and reads every source until it ends; the raw arrays, on the monotonic clock."""
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(gpu)
    edges: list[tuple[float, float]] = []
    ready = threading.Event()
    load = threading.Thread(target=square_wave, args=(seconds, gpu, edges, ready), daemon=True)
    load.start()
    ready.wait(300)
    # the clocks side by side: realtime - monotonic, to put sample timestamps on the load's clock
    offset_s = time.time() - time.monotonic()
    samples: dict[str, list[tuple[int, float]]] = {k: [] for k in KINDS}
    last = dict.fromkeys(KINDS, 0)
    errors: dict[str, str] = {}
    fields, counter, lags = [], [], []
    end = time.monotonic() + seconds + 0.5
    while time.monotonic() < end:
        t_read = time.monotonic()
        for name, kind in KINDS.items():
            if name in errors:
                continue
            try:
                vtype, got = pynvml.nvmlDeviceGetSamples(handle, kind, last[name])
            except pynvml.NVMLError as exc:
                if exc.value != pynvml.NVML_ERROR_NOT_FOUND:  # NOT_FOUND: nothing newer yet
                    errors[name] = str(exc)
                continue
            for s in got:
                if s.timeStamp > last[name]:
                    samples[name].append((int(s.timeStamp), float(getattr(s.sampleValue, VALUE[vtype]))))
            if got:
                last[name] = max(last[name], max(int(s.timeStamp) for s in got))
                if name == "total_power":
                    lags.append(time.time() * 1e3 - last[name] / 1e3)
        fv = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
        fields.append((t_read, fv.value.uiVal / 1e3))
        t0 = time.monotonic()
        energy = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        counter.append((t0, time.monotonic(), energy / 1e3))
        time.sleep(max(0.0, poll_ms / 1e3 - (time.monotonic() - t_read)))
    load.join(10)
    pynvml.nvmlShutdown()
    raw: dict[str, Any] = {
        "edges": np.array(edges), "fields": np.array(fields), "counter": np.array(counter),
        "offset": offset_s, "lags": np.array(lags), "errors": json.dumps(errors),
    }  # fmt: skip
    raw.update({k: np.array(v, dtype=float) for k, v in samples.items() if v})
    return raw


def analyze(raw: Any) -> dict[str, Any]:
    e, f, c, offset_s = raw["edges"], raw["fields"], raw["counter"], float(raw["offset"])
    errors = json.loads(str(raw["errors"])) if "errors" in raw else {}
    out: dict[str, Any] = {"errors": errors, "offset_realtime_minus_monotonic_s": offset_s}
    sources: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in KINDS:
        if name not in raw:
            continue
        arr = raw[name]
        ts = arr[:, 0] / 1e6 - offset_s  # onto the monotonic clock
        gaps = np.diff(ts) * 1e3
        entry: dict[str, Any] = {
            "count": int(ts.size), "per_s": float(ts.size / max(ts[-1] - ts[0], 1e-9)),
            "interval_ms_p10_p50_p90": [float(np.percentile(gaps, q)) for q in (10, 50, 90)] if gaps.size
            else [],
            "value_min_max": [float(arr[:, 1].min()), float(arr[:, 1].max())],
        }  # fmt: skip
        if name == "total_power" and e.size:
            watts = arr[:, 1] / 1e3
            entry["fit"] = found = fit(e, ts, watts)
            lo, hi = (c[0, 0] + c[0, 1]) / 2, (c[-1, 0] + c[-1, 1]) / 2
            inside = (ts >= lo) & (ts <= hi)
            entry["integral_j"] = float(np.trapezoid(watts[inside], ts[inside]))
            entry["counter_j"] = float(c[-1, 2] - c[0, 2])
            if "lags" in raw and raw["lags"].size:
                entry["read_lag_ms_p50_p90"] = [float(np.percentile(raw["lags"], q)) for q in (50, 90)]
            if "delay_ms" in found:
                sources["total_power"] = (ts - (found["delay_ms"] + found["span_ms"] / 2) / 1e3, watts)
        out[name] = entry
    if f.size and e.size:
        changed = np.flatnonzero(np.diff(f[:, 1], prepend=np.nan) != 0)
        found = fit(e, f[changed, 0], f[changed, 1])
        out["instant_field"] = {"changes_per_s": float(changed.size / (f[-1, 0] - f[0, 0])), "fit": found}
        if "delay_ms" in found:
            sources["instant_field"] = (f[changed, 0] - (found["delay_ms"] + found["span_ms"] / 2) / 1e3,
                                        f[changed, 1])  # fmt: skip
    if c.size and sources:
        out["counter_periods"] = periods(c, sources)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--poll-ms", type=float, default=20.0, help="how often every source is read")
    parser.add_argument("--json", help="write the analysis here")
    parser.add_argument("--raw", help="save the raw arrays here (.npz), for --from")
    parser.add_argument("--from", dest="source", help="analyze a saved --raw file instead of the GPU")
    args = parser.parse_args()
    if args.source:
        raw: Any = np.load(args.source)
    else:
        raw = collect(args.gpu, args.seconds, args.poll_ms)
        if args.raw:
            np.savez(args.raw, **raw)
    out = analyze(raw)
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
