"""A report's files: a CSV per table, a PNG per plot, and one self-contained HTML page (images inlined) that
says what was measured, on what, and what it found."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import numbers
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuprof.client.wire.errors import GpuprofError

from .report import CONFIDENCE, GROUP, QUALITY_TOLERANCE, Report, group_label, rows_of
from .report_steady_page import steady_figures, steady_lines, steady_notes

__all__ = ["group_sentence", "headline", "write_report"]

METRICS = (
    ("energy_j", "energy per request, mean (J)", "energy_vs_clock"),
    ("latency_s", "latency per request, median (s)", "latency_vs_clock"),
    ("gpu_power_w", "GPU power, mean over the point's window (W)", "power_vs_clock"),
    ("edp_js", "mean energy x median latency (J s)", "edp_vs_clock"),
    ("quality", "quality, mean", "quality_vs_clock"),
)
FONT_PT = 8  # the smallest text on a plot: legends and point labels
NOT_MEASURED = "not recorded by the job"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise GpuprofError("gpuprof report draws with matplotlib: pip install 'gpuprof[report]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any, plt: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _errors(frame: pd.DataFrame, column: str, interval: str | None = None) -> list[list[float]]:
    """Error bar lengths below and above each value, from its interval columns (``interval``_ci_low and
    _ci_high, ``column``'s by default; 0 where it has none)."""
    value, interval = frame[column].astype(float), interval or column
    below = (value - frame[f"{interval}_ci_low"].astype(float)).fillna(0).clip(lower=0)
    above = (frame[f"{interval}_ci_high"].astype(float) - value).fillna(0).clip(lower=0)
    return [below.tolist(), above.tolist()]


def _ci_name() -> str:
    return f"bars: {CONFIDENCE:.0%} intervals"


def _quality_left_out(report: Report) -> pd.Series:
    """Rows whose quality means nothing: synthetic weights, or no quality measured."""
    return report.clocks["synthetic_weights"] | report.clocks["quality"].isna()


def _metric_plot(report: Report, plt: Any, column: str, title: str, tag: str) -> bytes | None:
    table = report.clocks
    if column == "quality":
        table = table[~_quality_left_out(report)]
    table = table.dropna(subset=[column])
    if table.empty:
        return None
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for key, group in table.groupby(GROUP, dropna=False):
        line = axes.errorbar(
            group["clock_mhz"].astype(float), group[column], yerr=_errors(group, column), marker="o",
            capsize=3, label=group_label(*key),
        )  # fmt: skip
        capped = group[group["flagged"]]
        axes.scatter(
            capped["clock_mhz"].astype(float), capped[column], marker="x", s=80, color=line[0].get_color()
        )
    axes.set_xlabel("SM clock (MHz; x: flagged, the GPU ran below it)")
    axes.set_ylabel(title)
    axes.set_title(f"{_capital(title)} against SM clock{tag}\n({_ci_name()})", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=FONT_PT)
    return _png(figure, plt)


def _pareto_plot(report: Report, plt: Any, tag: str) -> bytes:
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for key, group in report.clocks[~report.clocks["flagged"]].groupby(GROUP, dropna=False):
        bars = axes.errorbar(
            group["latency_s"], group["energy_j"], xerr=_errors(group, "latency_s"),
            yerr=_errors(group, "energy_j"), fmt="o", capsize=2, alpha=0.7, label=group_label(*key),
        )  # fmt: skip
        front = rows_of(report.pareto, dict(zip(GROUP, key, strict=True))).sort_values("latency_s")
        axes.plot(front["latency_s"], front["energy_j"], color=bars[0].get_color())
        for row in group.itertuples():
            axes.annotate(
                f"{row.clock_mhz:g}", (row.latency_s, row.energy_j), fontsize=FONT_PT,
                xytext=(4, 4), textcoords="offset points",
            )  # fmt: skip
    axes.set_xlabel("latency per request, median (s)")
    axes.set_ylabel("energy per request, mean (J)")
    axes.set_title(f"Energy against latency, Pareto frontier joined{tag}\n({_ci_name()})", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=FONT_PT)
    return _png(figure, plt)


def _overall_correlations(report: Report) -> pd.DataFrame:
    table = report.correlations
    return table[table["model"] == "all"] if len(table) else table


def correlation_note(report: Report) -> str | None:
    """What the correlations over all requests show: which are significant, or that none is."""
    overall = _overall_correlations(report)
    if overall.empty:
        return None
    found = overall[overall["spearman_significant"]]
    if found.empty:
        return (
            f"No input feature's Spearman correlation with energy or latency is significant: every "
            f"{CONFIDENCE:.0%} interval spans zero."
        )
    pairs = ", ".join(f"{r.feature} with {r.target} ({r.spearman_rho:+.2f})" for r in found.itertuples())
    return (
        f"Spearman correlations whose {CONFIDENCE:.0%} interval excludes zero: {pairs}; the other intervals "
        "span zero. The intervals are not adjusted for the number of pairs tested."
    )


def _correlation_plot(report: Report, plt: Any, tag: str) -> bytes | None:
    overall = _overall_correlations(report)
    if overall.empty:
        return None
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    targets = sorted(set(overall["target"]))
    features = list(dict.fromkeys(overall["feature"]))
    height = 0.8 / len(targets)
    handles: list[Any] = []
    for index, target in enumerate(targets):
        rows = overall[overall["target"] == target].set_index("feature").reindex(features)
        positions = [i + (index - (len(targets) - 1) / 2) * height for i in range(len(features))]
        bars = axes.barh(
            positions, rows["spearman_rho"], height=height, xerr=_errors(rows, "spearman_rho", "spearman"),
            capsize=2, label=target,
        )  # fmt: skip
        for bar, significant in zip(bars.patches, rows["spearman_significant"].fillna(False), strict=True):
            bar.set_alpha(1.0 if significant else 0.35)
        colour = bars.patches[0].get_facecolor()[:3]
        handles.append(plt.Rectangle((0, 0), 1, 1, color=colour, label=target))  # unfaded, for the legend
    axes.set_yticks(range(len(features)), features, fontsize=FONT_PT + 1)
    axes.set_xlim(-1, 1)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel(f"Spearman rho over all requests ({_ci_name()}; faded: the interval spans zero)")
    none = not overall["spearman_significant"].any()
    axes.set_title(
        f"Input features against energy and latency{tag}"
        + ("\nnone significant: every interval spans zero" if none else ""),
        fontsize=10,
        color="#a00" if none else "black",
    )
    axes.legend(handles=handles, fontsize=FONT_PT)
    return _png(figure, plt)


def _plots(report: Report, plt: Any) -> dict[str, bytes]:
    tag = " (SIMULATED)" if report.simulated else ""
    out: dict[str, bytes] = {}
    for column, title, name in METRICS:
        data = _metric_plot(report, plt, column, title, tag)
        if data is not None:
            out[name] = data
    out["pareto"] = _pareto_plot(report, plt, tag)
    correlations = _correlation_plot(report, plt, tag)
    if correlations is not None:
        out["correlations"] = correlations
    for name, figure in steady_figures(report, plt, tag).items():
        out[name] = _png(figure, plt)
    return out


def _percent_interval(low: float, high: float) -> str:
    if pd.isna(low) or pd.isna(high):
        return f"{CONFIDENCE:.0%} interval unbounded: the energies are too uncertain"
    return f"{CONFIDENCE:.0%} CI {low:.1%} to {high:.1%}"


def _limit(budget: float) -> str:
    return "at any latency" if math.isinf(budget) else f"within {budget:g}x the default clock's latency"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(name): value for name, value in row.items()} for row in frame.to_dict("records")]


def _clause(row: dict[str, Any]) -> str:
    """A chosen clock's saving, its interval, and the latency it adds."""
    return (
        f"{row['saving']:.1%} less energy ({_percent_interval(row['saving_ci_low'], row['saving_ci_high'])}) "
        f"at {row['clock_mhz']} MHz, for {row['latency_increase']:+.1%} latency"
    )


def headline(savings: pd.DataFrame) -> list[str]:
    """Per latency budget, the largest saving over the groups with its interval and what it cost in
    latency, and the range of latency added over every group's chosen clock: the study's "up to X%"."""
    lines = []
    for budget in sorted(set(savings["latency_budget"])):
        rows = savings[savings["latency_budget"] == budget]
        chosen = _records(rows.dropna(subset=["saving"]))
        if not chosen:
            lines.append(f"{_capital(_limit(budget))}: no group has a clock that qualifies.")
            continue
        top = max(chosen, key=lambda row: row["saving"])
        if all(row["clock_mhz"] == row["default_clock_mhz"] for row in chosen):
            lines.append(f"{_capital(_limit(budget))}: only the default clock qualifies, in every group.")
            continue
        added = [row["latency_increase"] for row in chosen]
        lines.append(
            f"{_capital(_limit(budget))}: up to {top['saving']:.1%} less energy "
            f"({_percent_interval(top['saving_ci_low'], top['saving_ci_high'])}), "
            f"{group_label(*(top[c] for c in GROUP))} at {top['clock_mhz']} MHz against "
            f"{top['default_clock_mhz']} MHz, for {top['latency_increase']:+.1%} latency; over the "
            f"{len(chosen)} group(s) with a qualifying clock, latency changes by {min(added):+.1%} to "
            f"{max(added):+.1%}."
        )
    return lines


def group_sentence(rows: pd.DataFrame) -> str:
    """One group's savings, a clause per latency budget."""
    records = _records(rows)
    parts = []
    for row in records:
        budget = row["latency_budget"]
        limit = "any latency" if math.isinf(budget) else f"{budget:g}x latency"
        parts.append(f"{limit}: " + ("no clock qualifies" if pd.isna(row["saving"]) else _clause(row)))
    first = records[0]
    quality = (
        f"quality within {first['quality_tolerance']:g} of the default's"
        if first["quality_checked"]
        else str(first["note"]).split(";")[0]
    )
    return (
        f"{group_label(*(first[c] for c in GROUP))}, against {first['default_clock_mhz']} MHz ({quality}): "
        + "; ".join(parts)
        + "."
    )


def _when(wall_ns: Any) -> str:
    if not isinstance(wall_ns, int) or wall_ns <= 0:
        return NOT_MEASURED
    return dt.datetime.fromtimestamp(wall_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _distinct(values: Any) -> str:
    found = list(dict.fromkeys(str(v) for v in values if v is not None and not pd.isna(v)))
    return ", ".join(found) if found else NOT_MEASURED


def _models(result: dict[str, Any], requests: pd.DataFrame) -> str:
    models = (result.get("llm") or {}).get("models") or []
    if not models and "model" in requests:  # a study table: what its requests say
        columns = [c for c in ("model", "weights") if c in requests]
        pairs = requests[columns].drop_duplicates().astype(str).itertuples(index=False)
        return _distinct(" ".join(pair[:1]) + (f" ({pair[1]})" if len(pair) > 1 else "") for pair in pairs)
    described = []
    for m in models:
        params = f", {m['parameters'] / 1e6:,.1f} M parameters" if m.get("parameters") else ""
        versions = ", ".join(
            f"{k.split('_')[0]} {m[k]}" for k in ("torch_version", "transformers_version") if m.get(k)
        )
        described.append(
            f"{m.get('model')} ({m.get('weights')}; {m.get('dtype')}{params}; engine {m.get('engine')}; "
            f"attention {m.get('attention')}{'; ' + versions if versions else ''})"
        )
    return "; ".join(described) or NOT_MEASURED


def provenance(report: Report) -> list[dict[str, str]]:
    """Per job: what it was, where and when it ran, on what GPU and software (the page's first table)."""
    out = []
    for job in report.job.get("jobs") or [report.job]:
        result = job.get("result") or {}
        mine = report.requests
        if "job" in mine and (report.job.get("jobs") or []):
            mine = mine[mine["job"] == str(job.get("id"))]
        devices = [m.get("device") for m in (result.get("llm") or {}).get("models") or []]
        gpu = _distinct([*devices, *mine.get("gpu_name", [])])
        index = f"GPU {job['gpu']}: " if isinstance(job.get("gpu"), int) else ""
        out.append({
            "job": str(job.get("id")),
            "name": str(job.get("name")),
            "state": str(job.get("state") or NOT_MEASURED),
            "GPU": "SIMULATED (gpuprof's simulated GPU; no real GPU was measured): " + index + gpu
            if job.get("simulated") else index + gpu,
            "driver": "simulated" if job.get("simulated") else _distinct(mine.get("driver", [])),
            "node": _distinct(mine.get("node", [])),
            "created": _when(job.get("created_ns")),
            "started": _when(job.get("started_ns")),
            "finished": _when(job.get("finished_ns")),
            "models": _models(result, mine),
            "energy per request": str((result.get("llm") or {}).get("energy_method") or NOT_MEASURED),
            "result version": str(result.get("result_version") or NOT_MEASURED),
        })  # fmt: skip
    return out


def _version() -> str:
    try:
        return metadata.version("gpuprof")
    except metadata.PackageNotFoundError:
        return "unknown"


def _cell(value: Any, column: str) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "<td>-</td>"
    if isinstance(value, float):
        text = "any" if math.isinf(value) and column == "latency_budget" else f"{value:.4g}"
        return f"<td class=num>{text}</td>"
    numeric = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    kind = " class=note" if column == "note" else (" class=num" if numeric else "")
    return f"<td{kind}>{html.escape(str(value))}</td>"


def _table(frame: pd.DataFrame, wrap: bool = False) -> str:
    """A table that keeps identifiers on one line and scrolls sideways when wider than the page (``wrap``:
    one of sentences, wrapped instead)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(_cell(v, str(c)) for c, v in zip(frame.columns, row, strict=True)) + "</tr>"
        for row in frame.astype(object).itertuples(index=False)
    )
    opening = "<table class=wrap>" if wrap else "<table>"
    return f"<div class=scroll>{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em;line-height:1.4}"
    ".scroll{overflow-x:auto;margin-bottom:1.5em}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;white-space:nowrap;text-align:left}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}td.note{white-space:normal;min-width:24em}"
    ".wrap td{white-space:normal}"
    "th{background:#f3f3f3;position:sticky;top:0}img{max-width:100%}"
    ".sim{color:#fff;background:#a00;font-weight:bold;padding:.6em 1em;font-size:1.2em}"
    ".note{color:#333}.warn{color:#a00}pre{background:#f6f6f6;padding:.5em;overflow-x:auto}"
)


def _notes(report: Report) -> list[str]:
    """What a reader must know before reading the plots: power, quality and correlations."""
    notes = []
    if report.clocks["gpu_power_w"].isna().all():
        notes.append(
            "GPU power: not available. The job's result holds no measured window per point (a table of "
            "gpuprof study gather has none), so no power is plotted; energy per request over latency would "
            "not be the GPU's power, as a batch's requests share its energy."
        )
    left_out = report.clocks[_quality_left_out(report)]
    synthetic = sorted(set(left_out.loc[left_out["synthetic_weights"], "model"].astype(str)))
    if synthetic:
        notes.append(
            f"Quality is not plotted for {', '.join(synthetic)}: synthetic (random) weights, whose answers "
            "are meaningless text, so their quality (flat at the metric's floor) measures nothing. Their "
            "savings are stated without the quality constraint."
        )
    if report.clocks["quality"].isna().all():
        notes.append("Quality: none measured (no gold answers), so the quality constraint cannot be checked.")
    correlation = correlation_note(report)
    if correlation:
        notes.append(correlation)
    return notes


def _page(report: Report, images: dict[str, bytes], generated: dt.datetime) -> str:
    job = report.job
    esc = html.escape
    parts = [
        "<!doctype html><meta charset=utf-8>",
        f"<title>gpuprof report: job {esc(str(job.get('id')))}</title>",
        f"<style>{STYLE}</style>",
        f"<h1>Job {esc(str(job.get('id')))} ({esc(str(job.get('name')))})</h1>",
    ]
    if report.simulated:
        parts.append(
            "<p class=sim>SIMULATED: every figure here comes from gpuprof's simulated GPU, not a real one. "
            "It shows how the analysis works, not what any GPU costs.</p>"
        )
    parts.append("<h2>What was measured</h2>")
    parts.append(
        _table(pd.DataFrame(provenance(report)).set_index("job").T.reset_index(names="job"), wrap=True)
    )
    parts.append(
        f"<p>Report by gpuprof {esc(_version())}, generated {generated:%Y-%m-%d %H:%M:%S} UTC, from "
        f"{len(report.requests):,} requests. Intervals are {CONFIDENCE:.0%}: a mean's by Student's t, a "
        "median's from order statistics, EDP's and latency changes' by bootstrap over requests, a saving's "
        "by Fieller's theorem (docs/report.md). A point whose observed clock strays from the requested one "
        "is flagged and left out of optima, savings and the Pareto frontier. The default clock is the "
        "highest measured, what an unlocked GPU runs at.</p>"
    )
    for one in job.get("jobs") or [job]:
        spec = one.get("spec_text") or (json.dumps(one["spec"], indent=1) if one.get("spec") else "")
        if spec:
            parts.append(
                f"<details><summary>Spec of job {esc(str(one.get('id')))}</summary><pre>{esc(spec)}</pre>"
                "</details>"
            )
    parts.append("<h2>Energy saved against the default clock</h2><ul>")
    parts += [f"<li>{esc(line)}</li>" for line in headline(report.savings)]
    parts.append(
        f"</ul><p>A clock qualifies when it is unflagged, its median latency is within the budget times the "
        f"default's, and its mean quality is at least the default's minus {QUALITY_TOLERANCE:g}. The largest "
        "saving over groups is picked after the fact: its interval is that group's, not adjusted for the "
        "choice.</p><ul>"
    )
    parts += [
        f"<li>{esc(group_sentence(rows))}</li>" for _, rows in report.savings.groupby(GROUP, dropna=False)
    ]
    parts.append("</ul>")
    if len(report.steady_optima):
        tag = " (SIMULATED)" if report.simulated else ""
        parts.append(f"<h2>Energy-optimal clock per phase at steady state{tag}</h2><ul>")
        parts += [f"<li>{esc(line)}</li>" for line in steady_lines(report)]
        parts.append("</ul>")
    parts += [f"<p class=warn>{esc(note)}</p>" for note in [*_notes(report), *steady_notes(report)]]
    for name, data in images.items():
        encoded = base64.b64encode(data).decode()
        parts.append(
            f"<h2>{esc(name.replace('_', ' '))}</h2>"
            f"<img src='data:image/png;base64,{encoded}' alt='{esc(name)}'>"
        )
    for name, table in report.tables().items():
        parts.append(f"<h2>{esc(name)}.csv</h2>")
        parts.append(_table(table))
    return "\n".join(parts)


def write_report(report: Report, directory: str | Path) -> dict[str, list[str]]:
    """Writes the tables, plots and page into ``directory`` (made if missing); returns what was written."""
    plt = _pyplot()
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[str]] = {"tables": [], "plots": []}
        for name, table in report.tables().items():
            path = folder / f"{name}.csv"
            # Each row says whether its figures come from the simulated GPU: a CSV travels without the page.
            table.assign(simulated=report.simulated).to_csv(path, index=False)
            written["tables"].append(str(path))
        images = _plots(report, plt)
        for name, data in images.items():
            path = folder / f"{name}.png"
            path.write_bytes(data)
            written["plots"].append(str(path))
        page = folder / "report.html"
        page.write_text(_page(report, images, dt.datetime.now(dt.UTC)), encoding="utf-8")
    except OSError as exc:
        raise GpuprofError(f"cannot write the report into {str(folder)!r}: {exc.strerror}") from None
    written["page"] = [str(page)]
    return written
