"""A job's result for the terminal: an llm job's points (model x task x batch size) and steady state; a
clock sweep's points (an llm or a burn job's)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .formats import number

__all__ = ["render_llm", "render_sweep", "requests_json"]


def _fmt(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    return number(value, digits=digits, missing="-", scale=scale)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in [header, *rows]:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)).rstrip())
    return lines


def _lock(point: dict[str, Any]) -> str:
    """The clock a point asked for: its SM clock, or a phase-clock pair's as prefill/decode."""
    if point.get("prefill_clock_mhz") is not None:
        return f"{_fmt(point['prefill_clock_mhz'], 0)}/{_fmt(point.get('decode_clock_mhz'), 0)}"
    return _fmt(point.get("sm_clock_mhz"), 0)


def render_llm(section: dict[str, Any], simulated: bool) -> list[str]:
    """Lines for the ``llm`` section of a result."""
    if "error" in section:
        return [f"  requests: {section['error']}"]
    tag = " (SIMULATED)" if simulated else ""
    lines = []
    for model in section.get("models") or []:
        lines.append(
            f"  model {model.get('model')}: {model.get('weights')}, {model.get('architecture')}, "
            f"{(model.get('parameters') or 0) / 1e6:,.1f} M parameters, {model.get('dtype')}, "
            f"tokenizer {model.get('tokenizer')}, loaded in {_fmt(model.get('load_s'), 1)} s"
        )
        engine = model.get("engine") or "eager"
        detail = f"engine {engine}"
        if engine == "compiled":
            detail += f" ({model.get('compile_mode')} mode, {model.get('kv_cache')} KV cache"
            detail += f"; CUDA graphs: {model['cuda_graphs']})" if model.get("cuda_graphs") else ")"
        elif engine == "vllm":
            kv = model.get("kv_cache_bytes")
            detail += (
                f" (KV cache {f'{kv / 2**30:.3g}' if kv else '-'} GiB, up to {model.get('max_num_seqs')} "
                "sequences at once, prefix caching off)"
            )
        if model.get("attention"):
            detail += f", attention {model.get('attention')}"
        versions = [f"{name} {model.get(f'{name}_version')}" for name in ("vllm", "torch", "transformers")]
        lines.append(f"    {detail}; {', '.join(v for v in versions if not v.endswith(' None'))}")
    points = section.get("points") or []
    if points:
        lines.append(
            f"  requests{tag}: energy by {section.get('energy_method')}; TTFT and TPOT medians, J/REQ and "
            "J/TOK means; TTFT includes tokenization"
        )
        header = ["MODEL", "TASK", "BATCH", "REQ", "OUT TOK/S", "TTFT ms", "TPOT ms", "J/REQ", "CV", "J/TOK",
                  "QUALITY", "SHORT", "SM MHz"]  # fmt: skip
        synthetic = {
            m.get("model")
            for m in section.get("models") or []
            if str(m.get("weights", "")).startswith("synthetic")
        }
        swept = any(p.get("sm_clock_mhz") is not None or p.get("prefill_clock_mhz") for p in points)
        if swept:  # a sweep: in order of the clock asked for, beside the one observed
            points = sorted(
                points,
                key=lambda p: (str(p.get("model")), str(p.get("task")), p.get("batch_size") or 0,
                               p.get("sm_clock_mhz") or p.get("prefill_clock_mhz") or 0,
                               p.get("decode_clock_mhz") or 0),
            )  # fmt: skip
            header[-1] = "OBSERVED MHz"
            header.insert(-1, "LOCK MHz")
        rows = [
            [
                str(p.get("model") or "-"), str(p.get("task") or "-"), str(p.get("batch_size") or "-"),
                str(p.get("requests")),
                _fmt(p.get("output_tokens_per_s"), 1), _fmt(p.get("ttft_s_median"), 1, 1e3),
                _fmt(p.get("tpot_s_median"), 2, 1e3), _fmt(p.get("energy_per_request_j_mean"), 2),
                _fmt(p.get("energy_per_request_cv"), 2), _fmt(p.get("j_per_token_mean"), 4),
                "- synthetic" if p.get("model") in synthetic
                else f"{_fmt(p.get('quality_mean'), 3)} {p.get('quality_metric') or ''}".strip(),
                _fmt(p.get("short_window_fraction"), 2),
                *([_lock(p)] if swept else []),
                _fmt(p.get("observed_sm_clock_mhz_median"), 0),
            ]
            for p in points
        ]  # fmt: skip
        lines += ["    " + line for line in _table(header, rows)]
        lines.append(
            "    J/REQ: a request's share of its batch's energy; J/TOK: that over the request's input and "
            "output tokens"
        )
        if synthetic & {p.get("model") for p in points}:
            lines.append(
                "    QUALITY - synthetic: random weights answer nothing; their quality measures nothing"
            )
        for p in points:
            if p.get("capped"):
                lines.append(
                    f"    CAPPED: {p.get('model')} {p.get('task')} batch {p.get('batch_size')} ran at "
                    f"{_fmt(p.get('observed_sm_clock_mhz_median'), 0)} MHz, {_below(p)}, under "
                    f"{', '.join(r for r in p.get('clock_event_reasons') or [] if r != 'gpu_idle')}"
                )
        if any((p.get("short_window_fraction") or 0) > 0 for p in points):
            lines.append(
                "    SHORT: fraction of requests whose prefill or decode is shorter than one power-sensor "
                "update; use steady_state for energy per token"
            )
    steady = section.get("steady_state") or []
    if steady:
        lines.append(f"  steady state{tag}: back-to-back prefill or decode; energy per token ± bound")
        header = ["MODEL.BATCH", "PHASE", "SECONDS", "TOKENS", "TOK/S", "OF BOUND", "J/TOKEN", "±", "SOURCE",
                  "MEAN W", "SM MHz"]  # fmt: skip
        rows = [
            [
                str(s.get("id")), str(s.get("phase")), _fmt(s.get("seconds"), 2), str(s.get("tokens")),
                _fmt(s.get("tokens_per_s"), 0), _fmt(s.get("bandwidth_bound_share"), 2),
                _fmt(s.get("j_per_token"), 5),
                _fmt(s.get("j_per_token_uncertainty"), 5), str(s.get("energy_source")),
                _fmt(s.get("mean_power_w"), 1), _fmt(s.get("observed_sm_clock_mhz_median"), 0),
            ]
            for s in steady
        ]  # fmt: skip
        lines += ["    " + line for line in _table(header, rows)]
        lines.append(
            "    J/TOKEN: the window's energy over the tokens it processed (prefill: context tokens; decode: "
            "generated ones), ± its bound"
        )
        if any(s.get("bandwidth_bound_share") is not None for s in steady):
            lines.append(
                "    OF BOUND: decode tokens per second over the memory-bandwidth bound (docs/llm.md)"
            )
        for s in steady:
            if s.get("capped"):
                reasons = ", ".join(r for r in s.get("clock_event_reasons") or [] if r != "gpu_idle")
                lines.append(
                    f"    CAPPED: {s.get('id')} {s.get('phase')} ran at "
                    f"{_fmt(s.get('observed_sm_clock_mhz_median'), 0)} MHz, {_below(s)}, under {reasons}"
                )
    return lines


def _below(figures: dict[str, Any]) -> str:
    """What a capped point or window ran below: the clock locked for it, else the GPU's top clock."""
    locked = figures.get("sm_clock_mhz")
    return f"below its {_fmt(locked, 0)} MHz lock" if locked is not None else "below the GPU's top clock"


def render_sweep(dvfs: dict[str, Any], simulated: bool) -> list[str]:
    """Lines for a clock sweep: each point at its requested and observed clock, and the optima.

    An llm job's points cost per request (by model, task and batch size), a burn job's per operation, a
    command job's (that marked no request) per point: a run of its program, or a point it asked for."""
    points = dvfs.get("points") or []
    if not points:
        return []
    tag = " (SIMULATED)" if simulated else ""
    lines = [f"  clock sweep{tag}: {len(points)} points, {dvfs.get('flagged_points', 0)} flagged "
             f"(observed clock off the requested by more than {dvfs.get('clock_tolerance')})"]  # fmt: skip
    unit = points[0].get("unit")
    burn, whole = unit == "operation", unit == "point"
    keys: tuple[str, ...] = (
        ("kind", "size") if burn else ("point",) if whole else ("model", "task", "batch_size")
    )
    header = ["KIND", "SIZE"] if burn else ["POINT"] if whole else ["MODEL", "TASK", "BATCH"]
    # An operation costs millijoules and milliseconds: shown in those units.
    per_op = ["mJ/OP", "± CI95", "ms/OP", "EDP mJ*ms"]
    per_point = ["J/POINT", "± CI95", "SECONDS", "EDP J*s"]
    figures = per_op if burn else per_point if whole else ["J/REQ", "± CI95", "LATENCY s", "EDP J*s"]
    # Steady-state figures at each point's clock, where the job asked for them: energy per token of
    # prefill and decode, each ± its windows' 95% interval (docs/llm.md, "Clock sweeps").
    steady = any(p.get("decode_j_per_token") is not None for p in points)
    figures += ["PREFILL mJ/TOK", "DECODE mJ/TOK"] if steady else []
    # Burn and command sweeps' points each come from one window: its estimate's bound, beside the interval.
    bounded = any(p.get("energy_j_bound") is not None for p in points)
    figures[2:2] = ["± BOUND"] if bounded else []
    header += ["SM MHz", "OBSERVED", "P5-P95", *figures, "FLAG"]
    scale = 1e3 if burn else 1.0
    ordered = sorted(points, key=lambda p: (*(str(p.get(k)) for k in keys), p["sm_clock_mhz"]))
    rows = []
    for p in ordered:
        spread = p.get("observed_sm_clock_p5_p95_mhz") or [None, None]
        reasons = ",".join(r for r in p.get("clock_event_reasons") or [] if r != "gpu_idle")
        rows.append([
            *(str(p.get(k)) if p.get(k) is not None else "-" for k in keys), str(p["sm_clock_mhz"]),
            _fmt(p.get("observed_sm_clock_mhz"), 0), f"{_fmt(spread[0], 0)}-{_fmt(spread[1], 0)}",
            _fmt(p.get("energy_j"), 2, scale), _fmt(p.get("energy_j_ci95"), 2, scale),
            *([_fmt(p.get("energy_j_bound"), 2, scale)] if bounded else []),
            _fmt(p.get("latency_s"), 4, scale), _fmt(p.get("edp_js"), 3, scale * scale),
            *([_per_token(p, "prefill"), _per_token(p, "decode")] if steady else []),
            f"FLAGGED {reasons}".strip() if p.get("flagged") else "",
        ])  # fmt: skip
    lines += ["    " + line for line in _table(header, rows)]
    method = points[0].get("energy_method")
    if method:
        lines.append(f"    energy by {method}")
    if steady and any(_per_token_is_bound(p, phase) for p in points for phase in ("prefill", "decode")):
        lines.append("    mJ/TOK ± the 95% interval of the point's windows; *: ± the one window's bound")
    over = "kind x size" if burn else "the points" if whole else "model x task x batch"
    lines.append(
        f"    energy-optimal {dvfs.get('energy_optimal_mhz') or '-'} MHz, EDP-optimal "
        f"{dvfs.get('edp_optimal_mhz') or '-'} MHz (unflagged points, summed over {over})"
    )
    for search in dvfs.get("searches") or []:
        measured = search.get("measured") or []
        best = search.get("best_mhz")
        lines.append(
            f"    {search.get('objective')} search {search.get('id')}: "
            + (f"best {best} MHz" if best is not None else "no clock measured was held (all flagged)")
            + f", {len(measured)} of {search.get('grid')} clocks measured"
        )
    return lines


def _per_token_is_bound(point: dict[str, Any], phase: str) -> bool:
    """Whether a phase's ± is its window's bound (no interval: one window)."""
    return (
        point.get(f"{phase}_j_per_token_ci95") is None
        and point.get(f"{phase}_j_per_token_uncertainty") is not None
    )


def _per_token(point: dict[str, Any], phase: str) -> str:
    """A phase's steady energy per token in mJ, ± the 95% interval of its windows (else their bound, marked
    with a *)."""
    value = point.get(f"{phase}_j_per_token")
    if value is None:
        return "-"
    interval = point.get(f"{phase}_j_per_token_ci95")
    if interval is not None:
        return f"{_fmt(value, 2, 1e3)} ± {_fmt(interval, 2, 1e3)}"
    bound = point.get(f"{phase}_j_per_token_uncertainty")
    return f"{_fmt(value, 2, 1e3)} ± {_fmt(bound, 2, 1e3)}*" if bound is not None else _fmt(value, 2, 1e3)


def requests_json(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The requests table as JSON-ready records (a missing value is null)."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{str(k): v for k, v in record.items()} for record in records]
