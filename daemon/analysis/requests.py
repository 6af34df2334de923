"""Per-request energy and time of an llm job, from its markers and its GPU's trace.

Each batch's ``tokenize``, ``prefill`` and ``decode`` windows get their energy from the fused estimate
(sampler/energy.py: the counter between its updates, each window's edges placed by the power readings), or
from integrated power where the counter was not read; the requests of a batch share it by a fixed rule
(docs/llm.md): tokenization by characters, prefill by input tokens, decode by output tokens. A window
shorter than one power-sensor update is flagged: its energy is mostly the sensor's held value. The
steady-state windows are long enough for the energy counter; they give energy per prefill and per decode
token with the counter's bound.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuprof.sampler.energy import POWER_LAG_S, SENSOR_UPDATE_S, FusedEnergy, reason_names
from gpuprof.sampler.records import MISSING_POWER, MISSING_SM_CLOCK, POWER_SOURCE_NAMES

from ..markers import Marker
from .results import REQUEST_PHASES, plain, window_figures
from .windows import PhaseWindow

__all__ = ["REQUEST_PHASES", "HeldPower", "llm_result"]

SHARING = "shared within the batch (tokenize: chars, prefill: input, decode: output tokens)"
SHARING_TIMED = (
    "each request's own phases as its engine timed them, every instant shared among the requests working "
    "in it (prefill: input, decode: output tokens; tokenize: chars)"
)


class HeldPower:
    """A GPU's power as the sensor reported it (each reading held until the next), integrable in O(log n);
    with its energy-counter readings, window energies are the fused estimate instead (``method`` says),
    which also uses the driver's power samples where it keeps them."""

    def __init__(
        self,
        samples: np.ndarray,
        gpu: int,
        counter: np.ndarray | None = None,
        driver_power: np.ndarray | None = None,
    ) -> None:
        own = samples[samples["gpu"] == gpu]
        powered = own[(own["missing"] & MISSING_POWER) == 0]
        self.t = powered["t_ns"].astype(np.int64)
        self.w = powered["power_mw"].astype(np.float64) / 1000.0
        widths = np.diff(self.t).astype(np.float64) / 1e9
        self.cumulative = np.concatenate([[0.0], np.cumsum(widths * self.w[:-1])])
        source = int(powered["power_source"][0]) if powered.size else 0
        self.lag_s = POWER_LAG_S.get(POWER_SOURCE_NAMES.get(source, ""), SENSOR_UPDATE_S)
        clocked = own[(own["missing"] & MISSING_SM_CLOCK) == 0]
        self.clock_t = clocked["t_ns"].astype(np.int64)
        self.clock_mhz = clocked["sm_clock_mhz"].astype(np.float64)
        self.all_t = own["t_ns"].astype(np.int64)
        self.reasons = own["clock_event_reasons"].astype(np.uint64)
        fused = FusedEnergy(samples, counter, gpu, driver_power) if counter is not None else None
        self.fused = fused if fused is not None and fused.usable else None
        self.method = "fused (energy counter and power)" if self.fused else "integrated power"

    def _at(self, t_ns: int) -> float:
        """Energy in J from the first reading to ``t_ns``."""
        if self.t.size == 0 or t_ns <= self.t[0]:
            return 0.0
        k = int(np.searchsorted(self.t, t_ns, side="right")) - 1
        return float(self.cumulative[k] + self.w[k] * (t_ns - self.t[k]) / 1e9)

    def energy(self, t0: int, t1: int) -> tuple[float | None, float | None]:
        """(J, uncertainty J) over [t0, t1]: fused where the counter was read, else integrated power (None
        without a reading before t1)."""
        if self.fused is not None:
            found = self.fused.window(t0, t1)
            if found is not None:
                return found
        return self.integrated(t0, t1)

    def integrated(self, t0: int, t1: int) -> tuple[float | None, float | None]:
        """(J, uncertainty J) of held power over [t0, t1]; None without a reading before t1."""
        if self.t.size == 0 or t1 <= self.t[0] or t1 < t0:
            return None, None
        joules = self._at(t1) - self._at(max(t0, int(self.t[0])))
        mean = joules / ((t1 - t0) / 1e9) if t1 > t0 else 0.0
        return joules, abs(mean) * self.lag_s  # each edge's reading may be up to one update period stale

    def updates(self, t0: int, t1: int) -> np.ndarray:
        """The sensor's distinct readings in [t0, t1] (W): each reading once, however often sampled."""
        lo, hi = np.searchsorted(self.t, [t0, t1], side="left")
        held = self.w[lo:hi]
        return held[np.flatnonzero(np.diff(held, prepend=np.nan))] if held.size else held

    def clock_event_reasons(self, t0: int, t1: int) -> list[str]:
        """Names of the clock-event reasons seen in [t0, t1]."""
        lo, hi = np.searchsorted(self.all_t, [t0, t1], side="left")
        return reason_names(int(np.bitwise_or.reduce(self.reasons[lo:hi]))) if hi > lo else []

    def clock_quantiles(self, t0: int, t1: int) -> tuple[float, float] | None:
        """The 5th and 95th percentiles of the SM clock in [t0, t1]."""
        lo, hi = np.searchsorted(self.clock_t, [t0, t1], side="left")
        if hi <= lo:
            return None
        low, high = np.percentile(self.clock_mhz[lo:hi], [5, 95])
        return float(low), float(high)

    def median_clock(self, t0: int, t1: int) -> float | None:
        lo, hi = np.searchsorted(self.clock_t, [t0, t1], side="left")
        return float(np.median(self.clock_mhz[lo:hi])) if hi > lo else None


def _shares(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if total <= 0:
        return [1.0 / len(weights)] * len(weights)
    return [w / total for w in weights]


def _by_id(windows: Iterable[PhaseWindow], names: Sequence[str]) -> dict[tuple[str, str], PhaseWindow]:
    return {(w.name, str(w.attrs.get("id"))): w for w in windows if w.name in names}


@dataclass
class _TimedRequest:
    """One request's phases as its engine timed them (vLLM), and its share of the batch's energy."""

    prefill_s: float
    decode_s: float
    ttft_s: float
    latency_s: float
    prefill_j: float | None = None
    decode_j: float | None = None
    uncertainty_j: float = 0.0

    def short(self, lag_s: float) -> bool:
        return self.prefill_s < lag_s or 0 < self.decode_s < lag_s


TIMED = ("scheduled_ns", "first_token_ns", "last_token_ns")


def _timed_requests(
    batches: dict[str, list[Marker]], phases: dict[tuple[str, str], PhaseWindow], power: HeldPower
) -> dict[int, _TimedRequest]:
    """The engine-timed requests (``TIMED`` in their attributes), by ``id()`` of their marker: those of one
    point shared together, as an engine runs them together whatever call or batch they came in. Each
    request's latency counts from its batch's call (its ``tokenize`` window), else from ``queued_ns``, else
    from its scheduling."""
    groups: dict[str, list[tuple[Marker, int]]] = defaultdict(list)
    for batch_id, requests in batches.items():
        called = phases.get(("tokenize", batch_id))
        for marker in requests:
            a = marker.attrs
            if all(isinstance(a.get(key), int) for key in TIMED):
                start = called.t_start_ns if called else int(a.get("queued_ns") or a["scheduled_ns"])
                groups[str(a.get("point"))].append((marker, start))
    out: dict[int, _TimedRequest] = {}
    for items in groups.values():
        timed = _engine_timed([m.attrs for m, _ in items], [start for _, start in items], power)
        out.update({id(m): t for (m, _), t in zip(items, timed, strict=True)})
    return out


def _engine_timed(
    attrs: Sequence[dict[str, Any]], starts: Sequence[int], power: HeldPower
) -> list[_TimedRequest]:
    """Each request's prefill and decode energy where the engine timed every request (vLLM's continuous
    batching: requests can be scheduled, get their first token and end at different instants).

    The energy from the first request scheduled to the last token (the fused estimate, with its bound) is
    cut at every request's edges; each piece is apportioned by the held power's shape, then shared among
    the requests working in it by the tokens each processes there: a request in prefill its input tokens
    spread over its prefill, one in decode its generated tokens over its decode. A piece where no request
    works goes to the prefill of the requests waiting in it (queued, from ``queued_ns`` or their start, and
    not yet scheduled), and to none when none waits (the GPU idle between two calls)."""
    edges = [(int(a["scheduled_ns"]), int(a["first_token_ns"]), int(a["last_token_ns"])) for a in attrs]
    edges = [(s, max(s, f), max(s, f, last)) for s, f, last in edges]
    queued = [
        min(int(a.get("queued_ns") or start), s)
        for a, start, (s, _, _) in zip(attrs, starts, edges, strict=True)
    ]
    out = [
        _TimedRequest(
            prefill_s=(f - s) / 1e9, decode_s=(last - f) / 1e9, ttft_s=(f - start) / 1e9,
            latency_s=(last - start) / 1e9,
        )
        for (s, f, last), start in zip(edges, starts, strict=True)
    ]  # fmt: skip
    t0, t1 = min(e[0] for e in edges), max(e[2] for e in edges)
    total, bound = power.energy(t0, t1)
    if total is None or t1 <= t0:
        return out
    cuts = sorted({t for e in edges for t in e})
    pieces = list(itertools.pairwise(cuts))
    shape = [power.integrated(a, b)[0] or 0.0 for a, b in pieces]
    if sum(shape) <= 0:
        shape = [float(b - a) for a, b in pieces]
    scale = total / sum(shape)
    prefill, decode = [0.0] * len(edges), [0.0] * len(edges)
    inputs = [float(a.get("input_tokens") or 0) for a in attrs]
    generated = [max(float(a.get("output_tokens") or 0) - 1, 0.0) for a in attrs]
    for (a, b), weight in zip(pieces, shape, strict=True):
        joules = weight * scale
        work_p = [
            inputs[i] * (b - a) / (f - s) if s <= a and b <= f and f > s else 0.0
            for i, (s, f, _) in enumerate(edges)
        ]
        work_d = [
            generated[i] * (b - a) / (last - f) if f <= a and b <= last and last > f else 0.0
            for i, (_, f, last) in enumerate(edges)
        ]
        work = sum(work_p) + sum(work_d)
        if work <= 0:
            waiting = [i for i, (s, _, _) in enumerate(edges) if queued[i] <= a and b <= s]
            for i in waiting:
                prefill[i] += joules / len(waiting)
            continue
        for i in range(len(edges)):
            prefill[i] += joules * work_p[i] / work
            decode[i] += joules * work_d[i] / work
    for i, request in enumerate(out):
        request.prefill_j, request.decode_j = prefill[i], decode[i]
        request.uncertainty_j = (bound or 0.0) * (prefill[i] + decode[i]) / total if total else 0.0
    return out


def request_rows(
    markers: Sequence[Marker], windows: Sequence[PhaseWindow], power: HeldPower, simulated: bool
) -> list[dict[str, Any]]:
    """One row per ``request`` event, with its share of its batch's energy."""
    phases = _by_id(windows, REQUEST_PHASES)
    points = {str(w.attrs.get("id")): w.attrs for w in windows if w.name == "point"}
    loads = {str(w.attrs.get("model")): w.attrs for w in windows if w.name == "load"}
    batches: dict[str, list[Marker]] = defaultdict(list)
    for marker in markers:
        if marker.kind == "event" and marker.name == "request":
            batches[str(marker.attrs.get("id"))].append(marker)
    timed = _timed_requests(batches, phases, power)
    rows: list[dict[str, Any]] = []
    for batch_id, requests in batches.items():
        attrs = [m.attrs for m in requests]
        edges = {name: phases.get((name, batch_id)) for name in ("tokenize", "prefill", "decode")}
        seconds = {n: (w.duration_ns / 1e9 if w else None) for n, w in edges.items()}
        energy = {n: power.energy(w.t_start_ns, w.t_end_ns) if w else (None, None) for n, w in edges.items()}
        weights = {
            "tokenize": _shares([float(a.get("input_chars") or 0) for a in attrs]),
            "prefill": _shares([float(a.get("input_tokens") or 0) for a in attrs]),
            "decode": _shares([float(a.get("output_tokens") or 0) for a in attrs]),
        }
        decode = edges["decode"]
        steps = int(decode.attrs.get("steps", 0)) if decode else 0
        if decode is not None and "steps" not in decode.attrs:  # a program's own decode window: one step
            steps = max(int(a.get("output_tokens") or 0) for a in attrs) - 1  # per token after the first
        whole = phases.get(("batch", batch_id))
        marked = [w for w in edges.values() if w is not None]
        span = (whole.t_start_ns, whole.t_end_ns) if whole else None
        if span is None and marked:  # phases marked without a batch window (a command job's program)
            span = (min(w.t_start_ns for w in marked), max(w.t_end_ns for w in marked))
        sm_clock = power.median_clock(*span) if span else None
        short = any(
            w is not None and w.duration_ns / 1e9 < power.lag_s
            for n, w in edges.items()
            if n == "prefill" or (n == "decode" and steps > 0)
        )
        point = points.get(str(attrs[0].get("point")), {})
        model = loads.get(str(point.get("model")), {})
        for i, a in enumerate(attrs):
            own = timed.get(id(requests[i]))
            tokens = int(a.get("input_tokens") or 0) + int(a.get("output_tokens") or 0)
            tok_s, pre_s, dec_s = seconds["tokenize"], seconds["prefill"], seconds["decode"]
            tok_j, tok_u = energy["tokenize"]
            ttft: float | None
            if own is not None:  # each request's own phases (vLLM), its share of each instant
                pre_s, dec_s = own.prefill_s, own.decode_s
                parts = {
                    "tokenize": tok_j * weights["tokenize"][i] if tok_j is not None else None,
                    "prefill": own.prefill_j,
                    "decode": own.decode_j,
                }
                errs = [own.uncertainty_j] + ([tok_u * weights["tokenize"][i]] if tok_u is not None else [])
                ttft, latency, request_short = own.ttft_s, own.latency_s, own.short(power.lag_s)
                out_steps = int(a.get("output_tokens") or 0) - 1
                tpot = dec_s / out_steps if out_steps > 0 else None
            else:
                parts = {n: (e * weights[n][i] if e is not None else None) for n, (e, _) in energy.items()}
                errs = [u * weights[n][i] for n, (_, u) in energy.items() if u is not None]
                ttft = (tok_s or 0.0) + pre_s if pre_s is not None else None
                tpot = dec_s / steps if dec_s is not None and steps > 0 else None
                latency = sum(v for v in (tok_s, pre_s, dec_s) if v is not None)
                request_short = short
            known = [v for v in parts.values() if v is not None]
            total = sum(known) if known else None
            rows.append(
                {
                    "point": a.get("point"),
                    "model": point.get("model"),
                    "model_source": model.get("model_source"),
                    "weights": model.get("weights"),
                    "engine": model.get("engine", "eager" if point.get("model") else "command"),
                    "task": point.get("task"),
                    "batch_size": point.get("batch_size"),
                    "sm_clock_mhz": point.get("sm_clock_mhz"),
                    "batch": batch_id,
                    "rep": a.get("rep"),
                    "index": a.get("index"),
                    "prompt_id": a.get("prompt_id"),
                    "kind": a.get("kind"),
                    "input_tokens": a.get("input_tokens"),
                    "output_tokens": a.get("output_tokens"),
                    "tokenize_s": tok_s,
                    "prefill_s": pre_s,
                    "decode_s": dec_s,
                    "ttft_s": ttft,
                    "tpot_s": tpot,
                    "latency_s": latency,
                    "energy_j": total,
                    "energy_uncertainty_j": sum(errs) if errs else None,
                    "prefill_energy_j": parts["prefill"],
                    "decode_energy_j": parts["decode"],
                    "j_per_token": total / tokens if total is not None and tokens else None,
                    "energy_method": f"{power.method}, {SHARING_TIMED if own is not None else SHARING}",
                    "short_window": request_short,
                    "observed_sm_clock_mhz": sm_clock,
                    "simulated": simulated,
                    "input_chars": a.get("input_chars"),
                    "token_entropy": a.get("token_entropy_bits"),
                    "unique_token_ratio": a.get("unique_token_ratio"),
                    "entity_density": a.get("entity_density"),
                    "entity_method": a.get("entity_method"),
                    "reasoning_marker_density": a.get("reasoning_marker_density"),
                    "causal_question_score": a.get("causal_question_score"),
                    "complexity_score": a.get("complexity_score"),
                    "quality": a.get("quality"),
                    "quality_metric": a.get("quality_metric"),
                    "exact_match": a.get("exact_match"),
                    "choice": a.get("choice"),
                    "output": a.get("output"),
                }
            )
    return rows


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def point_summaries(rows: Sequence[dict[str, Any]], windows: Sequence[PhaseWindow]) -> list[dict[str, Any]]:
    """Per model x task x batch size: throughput, latency, energy per request and token, quality."""
    by_point: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_point[str(row["point"])].append(row)
    out = []
    for window in (w for w in windows if w.name == "point"):
        point_rows = by_point.get(str(window.attrs.get("id")), [])
        batch_latency: dict[str, float] = {}
        for r in point_rows:  # a batch lasts as long as its slowest request
            batch_latency[r["batch"]] = max(batch_latency.get(r["batch"], 0.0), float(r["latency_s"] or 0.0))
        busy_s = sum(batch_latency.values())
        energies = [r["energy_j"] for r in point_rows if r["energy_j"] is not None]
        output_tokens = sum(int(r["output_tokens"] or 0) for r in point_rows)
        input_tokens = sum(int(r["input_tokens"] or 0) for r in point_rows)
        mean_energy = float(np.mean(energies)) if energies else None
        spread = float(np.std(energies, ddof=1)) if len(energies) > 1 else None
        out.append(
            {
                "point": window.attrs.get("id"),
                "model": window.attrs.get("model"),
                "engine": point_rows[0]["engine"] if point_rows else None,
                "task": window.attrs.get("task"),
                "batch_size": window.attrs.get("batch_size"),
                "sm_clock_mhz": window.attrs.get("sm_clock_mhz"),
                **{  # a phase-clock pair's point: its two clocks
                    key: window.attrs[key]
                    for key in ("prefill_clock_mhz", "decode_clock_mhz")
                    if window.attrs.get(key) is not None
                },
                "repetitions": window.attrs.get("repetitions"),
                "ci95_target_reached": window.attrs.get("ci95_target_reached"),
                "requests": len(point_rows),
                "batches": len(batch_latency),
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "output_tokens_per_s": output_tokens / busy_s if busy_s > 0 else None,
                "input_tokens_per_s": input_tokens / busy_s if busy_s > 0 else None,
                "latency_s_median": _median(r["latency_s"] for r in point_rows),
                "ttft_s_median": _median(r["ttft_s"] for r in point_rows),
                "tpot_s_median": _median(r["tpot_s"] for r in point_rows),
                "energy_per_request_j_mean": mean_energy,
                "energy_per_request_j_std": spread,
                "energy_per_request_cv": spread / mean_energy if spread is not None and mean_energy else None,
                "j_per_token_mean": _mean(r["j_per_token"] for r in point_rows),
                "quality_mean": _mean(r["quality"] for r in point_rows),
                "quality_metric": next(
                    (r["quality_metric"] for r in point_rows if r["quality_metric"]), None
                ),
                "short_window_fraction": (
                    sum(bool(r["short_window"]) for r in point_rows) / len(point_rows) if point_rows else None
                ),
                "observed_sm_clock_mhz_median": _median(r["observed_sm_clock_mhz"] for r in point_rows),
            }
        )
    return out


def _per_token(figures: Sequence[dict[str, Any]], tokens: int) -> tuple[float | None, float | None, str]:
    """Energy per token over windows: the counter's where every window has it, else integrated power."""
    use_counter = all(f.get("energy_counter_j") is not None for f in figures)
    key = "energy_counter" if use_counter else "energy_integrated"
    values = [f.get(f"{key}_j") for f in figures]
    errors = [f.get(f"{key}_uncertainty_j") for f in figures]
    if not tokens or any(v is None for v in values):
        return None, None, key
    joules = math.fsum(v for v in values if v is not None)
    error = math.fsum(e for e in errors if e is not None)  # added linearly: edge errors need not cancel
    return joules / tokens, error / tokens, key


SPAN_GAP_NS = 1_000_000  # windows closer than this are one span (one ends as the next begins)


def _spans(group: Sequence[PhaseWindow]) -> list[tuple[int, int]]:
    """The windows' time covered, as spans of back-to-back windows, in order."""
    spans: list[list[int]] = []
    for window in sorted(group, key=lambda w: w.t_start_ns):
        if spans and window.t_start_ns - spans[-1][1] <= SPAN_GAP_NS:
            spans[-1][1] = max(spans[-1][1], window.t_end_ns)
        else:
            spans.append([window.t_start_ns, window.t_end_ns])
    return [(t0, t1) for t0, t1 in spans]


def _per_window_ci95(
    figures: Sequence[dict[str, Any]], group: Sequence[PhaseWindow], key: str
) -> float | None:
    """Half width of the 95% interval (Student's t) of the windows' energies per token: how much a
    repeated window differs from the next, beside each window's own bound."""
    from scipy import stats

    values = []
    for figure, window in zip(figures, group, strict=True):
        joules, tokens = figure.get(f"{key}_j"), int(window.attrs.get("tokens", 0))
        if joules is not None and tokens:
            values.append(joules / tokens)
    if len(values) < 2:
        return None
    spread = float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return float(stats.t.ppf(0.975, len(values) - 1)) * spread


def _bandwidth_bound(model: dict[str, Any], batch_size: Any) -> float | None:
    """Decode tokens a second if each step only read the weights at the GPU's peak memory bandwidth."""
    bandwidth, weights = model.get("memory_bandwidth_gbs"), model.get("weights_bytes")
    if not bandwidth or not weights or not isinstance(batch_size, int):
        return None
    return float(batch_size * bandwidth * 1e9 / weights)


def _model_entry(load: PhaseWindow, windows: Sequence[PhaseWindow]) -> dict[str, Any]:
    """A model as its load marker described it, with the simulated GPU's pace from its measure marker."""
    entry = dict(load.attrs)
    for window in windows:
        same = window.name == "measure" and window.attrs.get("id") == load.attrs.get("id")
        if same and "simulated_pace" in window.attrs:
            entry["simulated_pace"] = window.attrs["simulated_pace"]
        # the compiled engine's mode as its last compile window left it (it may fall back while compiling)
        mine = window.name == "compile" and str(window.attrs.get("id")).startswith(f"{load.attrs.get('id')}.")
        for key in ("compile_mode", "cuda_graphs"):
            if mine and key in window.attrs:
                entry[key] = window.attrs[key]
        if mine and isinstance(window.attrs.get("trials"), str):  # each mode's time a step, per batch size
            batch = str(window.attrs.get("batch_size"))
            entry.setdefault("compile_trials", {})[batch] = window.attrs["trials"]
    return {key: plain(value) for key, value in entry.items()}


def steady_summaries(
    windows: Sequence[PhaseWindow],
    samples: np.ndarray,
    energy: np.ndarray,
    gpu: int,
    driver_power: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Energy per prefill token and per decode token, per model and batch size, from the steady windows;
    decode's throughput also as a share of the memory-bandwidth bound (every step reads all the weights)
    where the GPU's bandwidth is known. ``driver_power``: the driver's power samples, where it keeps them."""
    loads = {str(w.attrs.get("id")): w.attrs for w in windows if w.name == "load"}
    groups: dict[tuple[str, str], list[PhaseWindow]] = defaultdict(list)
    for window in windows:
        if window.name in ("steady_prefill", "steady_decode"):
            base = str(window.attrs.get("id")).split(".s")[0]
            groups[(base, window.name)].append(window)
    out = []
    fused = FusedEnergy(samples, energy, gpu, driver_power) if groups else None

    def figures_of(t0: int, t1: int) -> dict[str, Any]:
        return window_figures(samples, energy, gpu, t0, t1, fused, driver_power)

    for (base, name), group in sorted(groups.items()):
        figures = [figures_of(w.t_start_ns, w.t_end_ns) for w in group]
        tokens = sum(int(w.attrs.get("tokens", 0)) for w in group)
        seconds = sum(w.duration_ns for w in group) / 1e9
        # The phase's energy over its spans of back-to-back windows: two edges per span, not per window.
        spans = [figures_of(t0, t1) for t0, t1 in _spans(group)]
        per_token, error, key = _per_token(spans, tokens)
        spread = _per_window_ci95(figures, group, key) if len(group) > 1 else None
        clocks = [f.get("sm_clock_median_mhz") for f in figures]
        model = loads.get(base.split(".bs")[0], {})
        batch_size = group[0].attrs.get("batch_size")
        tokens_per_s = tokens / seconds if seconds > 0 else None
        bound = _bandwidth_bound(model, batch_size) if name == "steady_decode" else None
        out.append(
            {
                "id": base,
                "point": base.split(".")[2] if base.count(".") >= 2 else None,  # m<i>.bs<n>.<point>
                "model": model.get("model"),
                "engine": model.get("engine", "eager"),
                "phase": name.removeprefix("steady_"),
                "batch_size": batch_size,
                "context_tokens": group[0].attrs.get("context_tokens"),
                "windows": len(group),
                "seconds": seconds,
                "tokens": tokens,
                "tokens_per_s": tokens_per_s,
                "bandwidth_bound_tokens_per_s": bound,
                "bandwidth_bound_share": tokens_per_s / bound if bound and tokens_per_s is not None else None,
                "j_per_token": per_token,
                "j_per_token_uncertainty": error,
                "j_per_token_ci95": spread,
                "energy_source": key.replace("energy_", ""),
                "mean_power_w": _mean(f.get("mean_power_w") for f in figures),
                "observed_sm_clock_mhz_median": _median(clocks),
                "clock_event_reasons": sorted(
                    {r for f in figures for r in f.get("clock_event_reasons") or []}
                ),
            }
        )
    return out


def llm_result(
    markers: Sequence[Marker],
    windows: Sequence[PhaseWindow],
    samples: np.ndarray,
    energy: np.ndarray,
    gpu: int,
    simulated: bool,
    power: HeldPower | None = None,
    driver_power: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(request rows, the result's ``llm`` section) of an llm job; ``power``: the GPU's, if already built
    (with the same ``driver_power``: the driver's power samples, where it keeps them)."""
    power = power or HeldPower(samples, gpu, energy, driver_power)
    rows = request_rows(markers, windows, power, simulated)
    section = {
        "models": [_model_entry(w, windows) for w in windows if w.name == "load"],
        "points": point_summaries(rows, windows),
        "steady_state": steady_summaries(windows, samples, energy, gpu, driver_power),
        "requests": len(rows),
        "energy_method": rows[0]["energy_method"] if rows else f"{power.method}, {SHARING}",
        "sensor_update_s": SENSOR_UPDATE_S,
    }
    return rows, plain(section, "llm")  # type: ignore[return-value]
