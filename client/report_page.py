"""A report's files: a CSV per table, a PNG per plot, and one self-contained HTML page (images inlined)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import pandas as pd

from gpuprof.client.wire.errors import GpuprofError

from .report import GROUP, Report, group_label

__all__ = ["write_report"]

METRICS = (
    ("energy_j", "energy per request (J)", "energy_vs_clock"),
    ("latency_s", "latency per request, median (s)", "latency_vs_clock"),
    ("mean_power_w", "mean power (W)", "power_vs_clock"),
    ("edp_js", "energy x latency (J s)", "edp_vs_clock"),
    ("quality", "quality, mean", "quality_vs_clock"),
)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise GpuprofError("gpuprof report draws with matplotlib: pip install 'gpuprof[report]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _label(key: tuple[Any, ...]) -> str:
    return group_label(*key)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _plots(report: Report, plt: Any) -> dict[str, bytes]:
    tag = " (SIMULATED)" if report.simulated else ""
    out: dict[str, bytes] = {}
    for column, title, name in METRICS:
        figure, axes = plt.subplots(figsize=(7, 4.2))
        for key, group in report.clocks.groupby(GROUP, dropna=False):
            group = group.dropna(subset=[column])
            if group.empty:
                continue
            errors = group["energy_j_ci95"] if column == "energy_j" else None
            line = axes.errorbar(
                group["clock_mhz"], group[column], yerr=errors, marker="o", label=_label(key)
            )
            capped = group[group["flagged"]]
            axes.scatter(capped["clock_mhz"], capped[column], marker="x", s=80, color=line[0].get_color())
        axes.set_xlabel("SM clock (MHz; x: flagged, the GPU ran below it)")
        axes.set_ylabel(title)
        axes.set_title(f"{title} against SM clock{tag}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        out[name] = _png(figure)
        plt.close(figure)
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for key, group in report.clocks[~report.clocks["flagged"]].groupby(GROUP, dropna=False):
        points = axes.scatter(group["latency_s"], group["energy_j"], label=_label(key), alpha=0.6)
        # The key in the table's own dtypes: a missing one (a command job's model) still matches.
        wanted = pd.DataFrame([dict(zip(GROUP, key, strict=True))])
        front = report.pareto.merge(wanted.astype(report.pareto[GROUP].dtypes.to_dict()), on=GROUP)
        axes.plot(front["latency_s"], front["energy_j"], color=points.get_facecolor()[0])
        for row in group.itertuples():
            axes.annotate(f"{row.clock_mhz:g}", (row.latency_s, row.energy_j), fontsize=6)
    axes.set_xlabel("latency per request, median (s)")
    axes.set_ylabel("energy per request (J)")
    axes.set_title(f"Energy against latency, Pareto frontier joined{tag}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    out["pareto"] = _png(figure)
    plt.close(figure)
    overall = report.correlations[report.correlations["model"] == "all"] if len(report.correlations) else None
    if overall is not None and len(overall):
        figure, axes = plt.subplots(figsize=(7, 4.2))
        pivot = overall.pivot(index="feature", columns="target", values="spearman_rho")
        pivot.plot.barh(ax=axes)
        axes.set_xlabel("Spearman rho over all requests")
        axes.set_title(f"Input features against energy and latency{tag}")
        axes.axvline(0, color="black", linewidth=0.8)
        out["correlations"] = _png(figure)
        plt.close(figure)
    return out


def _page(report: Report, images: dict[str, bytes]) -> str:
    job = report.job
    llm = (job.get("result") or {}).get("llm") or {}
    banner = (
        "<p class=sim>SIMULATED: these figures come from gpuprof's simulated GPU, not a real one.</p>"
        if report.simulated
        else ""
    )
    parts = [
        "<!doctype html><meta charset=utf-8>",
        f"<title>gpuprof report: job {html.escape(str(job.get('id')))}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".sim{color:#a00;font-weight:bold}</style>",
        f"<h1>Job {html.escape(str(job.get('id')))} ({html.escape(str(job.get('name')))})</h1>",
        banner,
        f"<p>{len(report.requests):,} requests. Energy per request: "
        f"{html.escape(str(llm.get('energy_method', 'integrated power')))}. A point whose observed clock "
        "strays from the requested one is flagged and left out of optima, savings and the Pareto frontier. "
        "The default clock is the highest measured, what an unlocked GPU runs at.</p>",
    ]
    for name, data in images.items():
        encoded = base64.b64encode(data).decode()
        parts.append(
            f"<h2>{html.escape(name.replace('_', ' '))}</h2><img src='data:image/png;base64,{encoded}'"
            " alt='plot'>"
        )
    for name, table in report.tables().items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
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
            table.to_csv(path, index=False)
            written["tables"].append(str(path))
        images = _plots(report, plt)
        for name, data in images.items():
            path = folder / f"{name}.png"
            path.write_bytes(data)
            written["plots"].append(str(path))
        page = folder / "report.html"
        page.write_text(_page(report, images), encoding="utf-8")
    except OSError as exc:
        raise GpuprofError(f"cannot write the report into {str(folder)!r}: {exc.strerror}") from None
    written["page"] = [str(page)]
    return written
