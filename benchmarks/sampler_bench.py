"""Sampler benchmark: read cost against a C floor, pacing jitter under GIL load, sensor capture, energy check.

    python benchmarks/sampler_bench.py [--simulate] [--json OUT] [--gpus 0 1] [--seconds-scale X]
                                       [--only cost jitter capture energy]

Every figure that BENCHMARKS.md reports is a ratio of measurements taken side by side in this one run.
Only reads NVML (no clock, power-limit or other setting is changed); the energy section runs a matmul
load (benchmarks/gpu_load.py) on the first GPU given. Prints a table per section and writes one JSON.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import json
import math
import os
import platform
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpuprof.sampler import NvmlLibrary, SamplerConfig, open_sampler, resolve
from gpuprof.sampler.backend import DEFAULT_SPIN_US
from gpuprof.sampler.energy import energy_window, integrate_power
from gpuprof.sampler.records import MISSING_POWER

HERE = Path(__file__).resolve().parent
NVML_INCLUDE = HERE.parent / "sampler" / "include"
SECTIONS = ("cost", "jitter", "capture", "energy")
BACKENDS = ("cython", "pynvml")
COST_S, JITTER_S, CAPTURE_S, ENERGY_S, ENERGY_WARMUP_S = 2.0, 5.0, 5.0, 12.0, 2.0
JITTER_RATES = (1000, 10000)
UNPACED_RATE_HZ = 1e9  # period 1 ns: every deadline has passed before the loop looks, so it never waits
DRAIN_EVERY_S = 0.1
FLAT_KEYS = (
    "c_floor_us",
    "cython_us",
    "pynvml_us",
    "cython_us_paced_1khz",
    "pynvml_us_paced_1khz",
    "cython_over_c_floor",
    "pynvml_over_cython",
    "cython_p99_us_1khz_gil",
    "pynvml_p99_us_1khz_gil",
    "cython_p99_us_10khz_gil",
    "capture_share",
    "sensor_period_ms",
    "detection_gap_mean_us",
    "detection_gap_max_us",
    "energy_counter_j",
    "energy_integrated_j",
    "energy_rel_diff",
)
GOALS = {
    "cython_over_c_floor": "<= 1.5",
    "pynvml_over_cython": ">= 5",
    "cython_p99_us_1khz_gil": "<= 50",
    "capture_share": "1.0 (100%)",
    "energy_rel_diff": "within +-0.01",
}


# ---- helpers ---------------------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    """Print rows under a title as a fixed-width table."""
    cells = [header] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n== {title}")
    for i, row in enumerate(cells):
        padded = [c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(padded))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value: Any) -> str:
    """A table cell: 3 significant digits, '-' for a missing figure."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:#.3g}".rstrip(".") if abs(value) < 99.5 else f"{value:.0f}"
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing."""
    return a / b if a is not None and b else None


def finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats (an overflowing jitter histogram's max) become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def unpaced(config: SamplerConfig) -> SamplerConfig:
    """``config`` with a rate far above MAX_RATE_HZ, so the fast loop never sleeps (cost, not pacing).

    At 100 kHz (the largest valid rate) a sampler that reads one GPU in a few microseconds still sleeps
    between ticks and its CPU time would include the sleep syscalls; this bypasses the validation on purpose.
    """
    object.__setattr__(config, "rate_hz", UNPACED_RATE_HZ)
    return config


@contextlib.contextmanager
def gil_load(enabled: bool) -> Iterator[dict[str, int]]:
    """While active, another Python thread keeps the GIL busy with a pure-Python arithmetic loop."""
    progress = {"loops": 0}
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x = (x * 31 + i) % 1000003
            progress["loops"] += 1

    thread = threading.Thread(target=spin, name="bench-gil-load", daemon=True)
    if enabled:
        thread.start()
    try:
        yield progress
    finally:
        stop.set()
        if enabled:
            thread.join()


def _tasks() -> set[int]:
    """Thread ids of this process."""
    return {int(t) for t in os.listdir("/proc/self/task")}


def _task_cpu_ns(tid: int) -> int | None:
    """CPU time a thread of this process has used, in ns (None once it has exited)."""
    try:
        return int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_sampler(
    lib: NvmlLibrary,
    backend: str,
    config: SamplerConfig,
    seconds: float,
    load: bool = False,
    keep: bool = False,
) -> dict[str, Any]:
    """Run one sampler for ``seconds`` (draining as it goes); its stats and, if ``keep``, its records (the
    driver's power samples included).

    The fast loop's CPU time is stats().cpu_ns; where a backend does not report it, the CPU time of the
    busiest thread the sampler started (/proc/self/task/*/schedstat) stands in, and ``cpu_source`` says so.
    """
    samples, energy, driver_power = [], [], []
    sampler = open_sampler(config, lib, backend=backend)
    try:
        with gil_load(load) as gil:
            before = _tasks()
            sampler.start()
            started = _tasks() - before
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(DRAIN_EVERY_S, left))
                s, e = sampler.drain()
                d = sampler.drain_driver_power()
                if keep:
                    samples.append(s)
                    energy.append(e)
                    driver_power.append(d)
            fallback = max((c for t in started if (c := _task_cpu_ns(t)) is not None), default=None)
            sampler.stop()
        s, e = sampler.drain()
        samples.append(s)
        energy.append(e)
        driver_power.append(sampler.drain_driver_power())
        stats = sampler.stats()
    finally:
        sampler.close()
    cpu_ns, source = (stats.cpu_ns, "stats.cpu_ns") if stats.cpu_ns is not None else (fallback, "schedstat")
    read = stats.samples + stats.overflows  # a dropped sample was read all the same
    return {
        "stats": stats.as_dict(),
        "cpu_ns": cpu_ns,
        "cpu_source": source,
        "cpu_us_per_sample": cpu_ns / 1000 / read if cpu_ns is not None and read else None,
        "gil_load_loops": gil["loops"] if load else None,
        "samples": np.concatenate(samples) if keep else None,
        "energy": np.concatenate(energy) if keep else None,
        "driver_power": np.concatenate(driver_power) if keep else None,
    }


def public(run: dict[str, Any]) -> dict[str, Any]:
    """A run's JSON-worthy part (no record arrays)."""
    return {k: v for k, v in run.items() if k not in ("samples", "energy", "driver_power")}


# ---- sections --------------------------------------------------------------------------------------------


def c_floor(lib: NvmlLibrary, gpus: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """Compile benchmarks/c_floor.c with ``cc -O2`` into a temp dir and run it; its JSON result."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return {"error": f"no C compiler: {cc!r} not found (install gcc, or set CC); C floor not measured"}
    with tempfile.TemporaryDirectory(prefix="gpuprof-cfloor-") as tmp:
        exe = Path(tmp) / "c_floor"
        build = [
            *cc.split(),
            "-O2",
            "-std=gnu11",
            f"-I{NVML_INCLUDE}",
            str(HERE / "c_floor.c"),
            "-o",
            str(exe),
        ]
        built = subprocess.run([*build, "-ldl"], capture_output=True, text=True)
        if built.returncode != 0:
            return {"error": f"compiling c_floor.c failed: {built.stderr.strip()[-500:]}"}
        ran = subprocess.run(
            [str(exe), lib.path, str(seconds), *map(str, gpus)], capture_output=True, text=True
        )
    try:
        return json.loads(ran.stdout)
    except json.JSONDecodeError:
        return {"error": f"c_floor exited {ran.returncode}: {(ran.stdout + ran.stderr).strip()[-500:]}"}


def section_cost(lib: NvmlLibrary, gpus: tuple[int, ...], scale: float) -> dict[str, Any]:
    """CPU microseconds per GPU-sample: C floor, unpaced Cython and pynvml loops, and both paced at 1 kHz."""
    seconds = COST_S * scale
    floor = c_floor(lib, gpus, seconds)
    runs = {}
    for backend in BACKENDS:
        config = unpaced(SamplerConfig(gpus, energy_rate_hz=0, buffer_seconds=5e-4))
        runs[f"{backend}_unpaced"] = public(run_sampler(lib, backend, config, seconds))
        paced = SamplerConfig(gpus, rate_hz=1000, energy_rate_hz=0, buffer_seconds=seconds + 2)
        runs[f"{backend}_paced_1khz"] = public(run_sampler(lib, backend, paced, seconds))
    out: dict[str, Any] = {"c_floor": floor, "runs": runs}
    out["c_floor_us"] = floor.get("us_per_sample")
    out["cython_us"] = runs["cython_unpaced"]["cpu_us_per_sample"]
    out["pynvml_us"] = runs["pynvml_unpaced"]["cpu_us_per_sample"]
    out["cython_us_paced_1khz"] = runs["cython_paced_1khz"]["cpu_us_per_sample"]
    out["pynvml_us_paced_1khz"] = runs["pynvml_paced_1khz"]["cpu_us_per_sample"]
    out["cython_over_c_floor"] = ratio(out["cython_us"], out["c_floor_us"])
    out["pynvml_over_cython"] = ratio(out["pynvml_us"], out["cython_us"])
    rows = [["C floor (c_floor.c)", out["c_floor_us"], floor.get("samples"), None, "1.0 (reference)"]]
    for backend in BACKENDS:
        for kind, label in (("unpaced", "unpaced"), ("paced_1khz", "paced 1 kHz")):
            run = runs[f"{backend}_{kind}"]
            us, stats = run["cpu_us_per_sample"], run["stats"]
            name = f"{backend} {label} [{run['cpu_source']}]"
            rows.append([name, us, stats["samples"], stats["achieved_rate_hz"], ratio(us, out["c_floor_us"])])
    table(
        "cost: CPU us per GPU-sample (6 reads)",
        ["loop", "us/sample", "samples", "ticks/s", "x C floor"],
        rows,
    )
    if "error" in floor or floor.get("failed_reads"):
        print(f"  C floor: {floor.get('error') or str(floor['failed_reads']) + ' reads failed'}")
    print(
        f"  cython / C floor = {fmt(out['cython_over_c_floor'])} (goal {GOALS['cython_over_c_floor']}); "
        f"pynvml / cython = {fmt(out['pynvml_over_cython'])} (goal {GOALS['pynvml_over_cython']})"
    )
    return out


JITTER_COLUMNS = ("p50_us", "p99_us", "max_us", "achieved_rate_hz", "deadline_misses", "cpu_us_per_sample")


def jitter_entry(run: dict[str, Any]) -> dict[str, Any]:
    """One jitter run's figures: |interval - period| percentiles, rate reached, misses, cost."""
    stats = run["stats"]
    entry = {k: stats[f"jitter_{k}"] for k in ("p50_us", "p99_us", "max_us")}
    entry.update({k: stats[k] for k in ("achieved_rate_hz", "deadline_misses", "ticks")})
    entry.update({k: run[k] for k in ("cpu_us_per_sample", "gil_load_loops")})
    return entry


def section_jitter(
    lib: NvmlLibrary, gpus: tuple[int, ...], scale: float, spin_us: int = DEFAULT_SPIN_US
) -> dict[str, Any]:
    """|tick interval - period| at 1 and 10 kHz per backend, alone and with a GIL-hogging Python thread."""
    jitter: dict[str, Any] = {"spin_us": spin_us}
    rows = []
    for rate in JITTER_RATES:
        for backend in BACKENDS:
            for load in ("no_load", "gil_load"):
                config = SamplerConfig(gpus, rate_hz=rate, spin_us=spin_us)
                run = run_sampler(lib, backend, config, JITTER_S * scale, load=load == "gil_load")
                entry = jitter_entry(run)
                jitter.setdefault(str(rate), {}).setdefault(backend, {})[load] = entry
                rows.append([f"{rate} Hz", backend, load, *(entry[k] for k in JITTER_COLUMNS)])
    table(
        f"jitter: |interval - period| (spin {spin_us} us)", ["rate", "backend", "load", *JITTER_COLUMNS], rows
    )
    out = {
        "jitter": jitter,
        "cython_p99_us_1khz_gil": jitter["1000"]["cython"]["gil_load"]["p99_us"],
        "pynvml_p99_us_1khz_gil": jitter["1000"]["pynvml"]["gil_load"]["p99_us"],
        "cython_p99_us_10khz_gil": jitter["10000"]["cython"]["gil_load"]["p99_us"],
    }
    print(
        f"  cython p99 at 1 kHz under GIL load = {fmt(out['cython_p99_us_1khz_gil'])} us "
        f"(goal {GOALS['cython_p99_us_1khz_gil']} us)"
    )
    return out


def power_updates(samples: np.ndarray, gpu: int) -> tuple[dict[str, Any], np.ndarray]:
    """Instant-power updates in one GPU's samples (changes of value): figures, and detection gaps in us."""
    own = samples[(samples["gpu"] == gpu) & ((samples["missing"] & MISSING_POWER) == 0)]
    t, power = own["t_ns"].astype(np.int64), own["power_mw"].astype(np.int64)
    first_new = np.flatnonzero(np.diff(power)) + 1  # first sample showing a new value
    update_t = t[first_new]
    gaps_us = (t[first_new] - t[first_new - 1]) / 1e3  # the update happened inside this gap
    duration_ns = int(t[-1] - t[0]) if t.size > 1 else 0
    period_ns = float(np.median(np.diff(update_t))) if update_t.size > 2 else None
    expected = duration_ns / period_ns if period_ns else None
    missed = np.clip(np.rint(np.diff(update_t) / period_ns) - 1, 0, None).sum() if period_ns else 0
    return {
        "gpu": gpu,
        "samples": int(own.size),
        "duration_s": duration_ns / 1e9,
        "updates_detected": int(first_new.size),
        "sensor_period_ms": period_ns / 1e6 if period_ns else None,
        "updates_expected": expected,
        "capture_share": first_new.size / expected if expected else None,
        "updates_missed_or_equal": int(missed),  # sensor periods between two updates with no change seen
        "capture_share_in_span": first_new.size / (first_new.size + missed) if first_new.size else None,
        "detection_gap_mean_us": float(gaps_us.mean()) if gaps_us.size else None,
        "detection_gap_max_us": float(gaps_us.max()) if gaps_us.size else None,
    }, gaps_us


def capture_summary(per_gpu: list[dict[str, Any]], gaps_us: np.ndarray) -> dict[str, Any]:
    """The flat capture figures over all GPUs: share of updates seen, sensor period, detection gaps."""
    detected = sum(g["updates_detected"] for g in per_gpu)
    missed = sum(g["updates_missed_or_equal"] for g in per_gpu)
    expected = sum(g["updates_expected"] or 0 for g in per_gpu)
    periods = [g["sensor_period_ms"] for g in per_gpu if g["sensor_period_ms"]]
    return {
        "capture_share": detected / expected if expected else None,
        "capture_share_in_span": detected / (detected + missed) if detected else None,
        "sensor_period_ms": float(np.median(periods)) if periods else None,
        "detection_gap_mean_us": float(gaps_us.mean()) if gaps_us.size else None,
        "detection_gap_max_us": float(gaps_us.max()) if gaps_us.size else None,
    }


CAPTURE_COLUMNS = (
    "gpu",
    "updates_detected",
    "sensor_period_ms",
    "capture_share",
    "capture_share_in_span",
    "updates_missed_or_equal",
    "detection_gap_mean_us",
    "detection_gap_max_us",
)


def section_capture(
    lib: NvmlLibrary, gpus: tuple[int, ...], scale: float, spin_us: int = DEFAULT_SPIN_US
) -> dict[str, Any]:
    """At 1 kHz under load, how many instant-power sensor updates each backend sees and how late."""
    out: dict[str, Any] = {"capture": {}}
    rows = []
    # under load, so that consecutive sensor updates differ (an idle GPU can report one value twice)
    proc = start_load(gpus[0], 2 * CAPTURE_S * scale + 60, lib.simulated)
    try:
        runs = {
            backend: run_sampler(
                lib, backend, SamplerConfig(gpus, rate_hz=1000, spin_us=spin_us), CAPTURE_S * scale, keep=True
            )
            for backend in BACKENDS
        }
    finally:
        stop_load(proc)
    for backend, run in runs.items():
        found = [power_updates(run["samples"], gpu) for gpu in gpus]
        per_gpu = [figures for figures, _ in found]
        summary = capture_summary(per_gpu, np.concatenate([gaps for _, gaps in found]))
        out["capture"][backend] = {"summary": summary, "per_gpu": per_gpu, "run": public(run)}
        rows += [[backend, *(g[k] for k in CAPTURE_COLUMNS)] for g in per_gpu]
    table(
        f"capture: instant-power updates at 1 kHz, GPU {gpus[0]} under load",
        ["backend", *CAPTURE_COLUMNS],
        rows,
    )
    out.update(out["capture"]["cython"]["summary"])
    out["capture_caveat"] = (
        "an update is detected as a change of value: two consecutive sensor updates reporting the same "
        "milliwatts (possible on an idle GPU) count as one, lowering the share; the true delay of a "
        "detection is at most its gap"
    )
    print(
        f"  cython capture share = {fmt(out['capture_share'])} (goal {GOALS['capture_share']}). "
        f"Caveat: {out['capture_caveat']}."
    )
    return out


def start_load(gpu: int, seconds: float, simulated: bool) -> subprocess.Popen[str]:
    """benchmarks/gpu_load.py in a subprocess (its own GIL) on ``gpu``; returns once it prints ``warm``."""
    command = [sys.executable, str(HERE / "gpu_load.py"), "--seconds", f"{seconds:g}"]
    env = dict(os.environ)
    if simulated:
        command += ["--simulate", "--gpu", str(gpu)]
    else:  # CUDA numbers GPUs fastest-first unless told to follow PCI order, as NVML does
        env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(gpu))
    # stderr to a file, not a pipe nobody reads: a chatty torch must never block on it
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        stdout, deadline = proc.stdout, time.monotonic() + 180  # torch and CUDA may take a while to start
        while stdout and time.monotonic() < deadline and proc.poll() is None:
            if select.select([stdout], [], [], 1.0)[0]:
                line = stdout.readline()
                if line.startswith("warm"):
                    print(f"  load: {line.strip()}")
                    return proc
        stop_load(proc)
        errors.seek(0)
        raise RuntimeError(f"GPU load did not start: {errors.read().strip()[-800:]}")


def stop_load(proc: subprocess.Popen[str]) -> None:
    """Terminate the load (the simulated one restores the GPU's utilization on SIGTERM) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def section_energy(lib: NvmlLibrary, gpus: tuple[int, ...], scale: float) -> dict[str, Any]:
    """Integrated instant power against the energy counter's delta over the counter's window, under load."""
    gpu, seconds = gpus[0], ENERGY_S * scale
    proc = start_load(gpu, ENERGY_WARMUP_S + seconds + 30, lib.simulated)
    try:
        time.sleep(ENERGY_WARMUP_S)
        config = SamplerConfig((gpu,), rate_hz=1000, energy_rate_hz=10, buffer_seconds=seconds + 5)
        run = run_sampler(lib, "cython", config, seconds, keep=True)
    finally:
        stop_load(proc)
    samples, energy = run["samples"], run["energy"]
    window = energy_window(samples, energy, gpu, driver_power=run["driver_power"])
    c0, c1 = window.counter_t_start_ns, window.counter_t_end_ns
    if c0 is None or c1 is None:
        raise RuntimeError("fewer than two good energy-counter readings: nothing to compare")
    powered = samples[(samples["gpu"] == gpu) & ((samples["missing"] & MISSING_POWER) == 0)]
    integrated = integrate_power(powered["t_ns"].astype(np.int64), powered["power_mw"] / 1000.0, c0, c1)
    counter = window.energy_counter_j
    out = {
        "energy_gpu": gpu,
        "energy_window_s": (c1 - c0) / 1e9,
        "energy_counter_j": counter,
        "energy_integrated_j": integrated,
        "energy_rel_diff": (integrated - counter) / counter if counter else None,
        "energy_mean_power_w": integrated / ((c1 - c0) / 1e9),
        "energy_mean_util_pct": float(powered["util_pct"].mean()),
        "sm_clock_min_mhz": window.sm_clock_min_mhz,
        "sm_clock_max_mhz": window.sm_clock_max_mhz,
        "clock_event_reasons": window.clock_event_reasons,
        "energy_window": finite(window.as_dict()),
        "energy_run": public(run),
    }
    rows = [[k, v] for k, v in out.items() if not isinstance(v, (dict, list))]
    rows.append(["clock_event_reasons", ",".join(window.clock_event_reasons) or "none"])
    table(f"energy: GPU {gpu} under load, counter window", ["figure", "value"], rows)
    print(f"  relative difference {fmt(out['energy_rel_diff'])} (goal {GOALS['energy_rel_diff']})")
    busy = out["energy_mean_util_pct"]
    if busy < 50:  # e.g. the load ran on another GPU than the one sampled
        print(f"  WARNING: GPU {gpu} was busy only {busy:.0f}% of the window: the figures are not under load")
    return out


# ---- run -------------------------------------------------------------------------------------------------


def device_info(lib: NvmlLibrary, gpus: tuple[int, ...]) -> dict[str, Any]:
    """GPU names and the driver version, read through pynvml from the library under test."""
    import pynvml

    from gpuprof.sampler.device import use_library

    info: dict[str, Any] = {"library": lib.path, "simulated": lib.simulated}
    try:
        use_library(lib.path)
        pynvml.nvmlInit()
        try:
            info["driver_version"] = pynvml.nvmlSystemGetDriverVersion()
            info["gpus"] = {
                str(g): pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(g)) for g in gpus
            }
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        info["error"] = f"NVML: {exc}"
    info["name"] = next(iter(info.get("gpus", {}).values()), "unknown")
    return info


def run_info() -> dict[str, Any]:
    """How and where a benchmark ran: its command line and the host, for its JSON."""
    return {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "host": {
            "name": socket.gethostname(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }


def simulate_node(gpu_count: int) -> None:
    """A simulated node of ``gpu_count`` default GPUs in a state file of our own (no other user sees it)."""
    from gpuprof.sampler.sim import SimulatedNvml
    from gpuprof.sampler.sim_config import GpuSpec, SimConfig

    state_dir = tempfile.mkdtemp(prefix="gpuprof-bench-")
    atexit.register(shutil.rmtree, state_dir, ignore_errors=True)
    os.environ["GPUPROF_SIM_STATE"] = str(Path(state_dir) / "sim.state")
    SimulatedNvml().configure(SimConfig(gpus=(GpuSpec(),) * gpu_count))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="sample gpuprof's simulated GPU")
    parser.add_argument("--json", type=Path, help="results file (default out/sampler_bench_<date>.json)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[0], help="GPU indices (default 0)")
    parser.add_argument("--seconds-scale", type=float, default=1.0, help="multiply every duration")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument(
        "--spin-us",
        type=int,
        default=DEFAULT_SPIN_US,
        help="samplers' spin before each tick (jitter, capture)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.simulate:
        simulate_node(max(args.gpus) + 1)
    lib, gpus = resolve(simulate=args.simulate), tuple(args.gpus)
    now = datetime.datetime.now(datetime.UTC)
    result: dict[str, Any] = {
        "simulated": lib.simulated,
        "device": device_info(lib, gpus),
        "date": now.isoformat(timespec="seconds"),
        **run_info(),
        "gpus": list(gpus),
        "seconds_scale": args.seconds_scale,
        "goals": GOALS,
        "errors": {},
        **dict.fromkeys(FLAT_KEYS),  # present (null) even when a section is skipped or fails
    }
    label = "SIMULATED GPU" if lib.simulated else "REAL GPU"
    print(
        f"gpuprof sampler benchmark -- {label}: {result['device']['name']} "
        f"(driver {result['device'].get('driver_version', '?')}), GPUs {list(gpus)}, {lib.path}"
    )
    sections = {
        "cost": section_cost,
        "jitter": section_jitter,
        "capture": section_capture,
        "energy": section_energy,
    }
    for name in args.only or SECTIONS:
        started = time.monotonic()
        try:
            extra = {"spin_us": args.spin_us} if name in ("jitter", "capture") else {}
            result.update(sections[name](lib, gpus, args.seconds_scale, **extra))
        except Exception as exc:  # one failed section must not cost the lead the others' GPU time
            traceback.print_exc()
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"  {name}: FAILED ({result['errors'][name]})")
        if name == "cost" and "error" in result.get("c_floor", {}):
            result["errors"]["c_floor"] = result["c_floor"]["error"]
        print(f"  ({name}: {time.monotonic() - started:.1f} s{', SIMULATED' if lib.simulated else ''})")
    out = args.json or Path("out") / f"sampler_bench_{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(result), indent=2) + "\n")
    print(f"\nwrote {out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
