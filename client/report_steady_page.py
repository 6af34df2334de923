"""The steady-state part of a report: energy per token, tokens per second and measured power per phase
against SM clock (each with its interval, the per-request energy per token beside the steady one), and the
energy-optimal clock per phase in words."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .report import CONFIDENCE, Report, group_label, rows_of
from .report_steady import PHASES, STEADY_KEY, energy_unit, steady_verdict, widest

__all__ = ["steady_figures", "steady_lines", "steady_notes"]

FONT_PT = 8
BARS = (
    f"bars: the wider of the measurement bound and the {CONFIDENCE:.0%} t interval over the windows; "
    f"dashed: per request, {CONFIDENCE:.0%} t interval over the requests"
)


def _label(report: Report, key: tuple[Any, ...]) -> str:
    """A group by name, and its job's id where the report holds several jobs."""
    label = group_label(*key[:4])
    return f"{label} [job {key[4]}]" if report.steady["job"].nunique() > 1 else label


def _lengths(value: pd.Series, low: Any, high: Any, scale: float = 1.0) -> list[list[float]]:
    """Error bar lengths below and above each value (0 where it has no interval)."""
    value = value.astype(float)
    below = (value - pd.Series(low, index=value.index).astype(float)).fillna(0).clip(lower=0) * scale
    above = (pd.Series(high, index=value.index).astype(float) - value).fillna(0).clip(lower=0) * scale
    return [below.tolist(), above.tolist()]


def _axes_per_phase(plt: Any) -> tuple[Any, Any]:
    figure, axes = plt.subplots(1, len(PHASES), figsize=(11, 4.8), layout="constrained")
    return figure, dict(zip(PHASES, axes, strict=True))


def _finish(figure: Any, axes: dict[str, Any], ylabel: str, title: str) -> None:
    for phase, ax in axes.items():
        ax.set_title(phase, fontsize=10)
        ax.set_xlabel("SM clock (MHz; x: flagged, the GPU ran below it)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=FONT_PT)
    figure.suptitle(title, fontsize=10)


def _energy(report: Report, plt: Any, tag: str) -> Any:
    figure, axes = _axes_per_phase(plt)
    optima = report.steady_optima
    scale, unit = energy_unit(report.steady["j_per_token"])
    for key, group in report.steady.groupby(STEADY_KEY, dropna=False, sort=False):
        for phase, rows in group.groupby("phase", sort=False):
            ax, rows = axes[phase], rows.sort_values("clock_mhz")
            clock = rows["clock_mhz"].astype(float)
            low, high = widest(rows)
            line = ax.errorbar(
                clock, rows["j_per_token"] * scale, yerr=_lengths(rows["j_per_token"], low, high, scale),
                marker="o", capsize=3, label=f"{_label(report, key)}, steady",
            )  # fmt: skip
            colour = line[0].get_color()
            flagged = rows[rows["flagged"]]
            ax.scatter(flagged["clock_mhz"].astype(float), flagged["j_per_token"] * scale, marker="x", s=80,
                       color=colour)  # fmt: skip
            best = rows_of(optima, {**dict(zip(STEADY_KEY, key, strict=True)), "phase": phase})
            if len(best) and not pd.isna(best["energy_optimal_mhz"].iloc[0]):
                ax.scatter([float(best["energy_optimal_mhz"].iloc[0])], [best["j_per_token"].iloc[0] * scale],
                           marker="*", s=160, color=colour, zorder=3)  # fmt: skip
            per_request = rows.dropna(subset=["request_j_per_token"])
            if len(per_request):
                low = per_request["request_j_per_token_ci_low"]
                high = per_request["request_j_per_token_ci_high"]
                short = per_request["short_window_share"].fillna(0).max()
                note = f"; {short:.0%} of requests in short windows" if short > 0 else ""
                ax.errorbar(
                    per_request["clock_mhz"].astype(float), per_request["request_j_per_token"] * scale,
                    yerr=_lengths(per_request["request_j_per_token"], low, high, scale),
                    marker="s", linestyle="--", mfc="none", capsize=2, alpha=0.6, color=colour,
                    label=f"{_label(report, key)}, per request{note}",
                )  # fmt: skip
    _finish(
        figure, axes, f"energy per token ({unit})",
        f"Energy per token at steady state against SM clock{tag} (star: energy-optimal)\n({BARS})",
    )  # fmt: skip
    return figure


def _per_window(report: Report, plt: Any, column: str, ylabel: str, title: str) -> Any:
    figure, axes = _axes_per_phase(plt)
    for key, group in report.steady.groupby(STEADY_KEY, dropna=False, sort=False):
        for phase, rows in group.groupby("phase", sort=False):
            rows = rows.sort_values("clock_mhz")
            line = axes[phase].errorbar(
                rows["clock_mhz"].astype(float), rows[column],
                yerr=_lengths(rows[column], rows[f"{column}_ci_low"], rows[f"{column}_ci_high"]),
                marker="o", capsize=3, label=_label(report, key),
            )  # fmt: skip
            flagged = rows[rows["flagged"]]
            axes[phase].scatter(flagged["clock_mhz"].astype(float), flagged[column], marker="x", s=80,
                                color=line[0].get_color())  # fmt: skip
    bars = f"bars: {CONFIDENCE:.0%} t intervals over the windows; none where a phase ran one window"
    _finish(figure, axes, ylabel, f"{title}\n({bars})")
    return figure


def steady_figures(report: Report, plt: Any, tag: str) -> dict[str, Any]:
    """The steady-state plots by name (none where no point has steady figures); the caller closes them."""
    if report.steady.empty:
        return {}
    return {
        "steady_energy_per_token_vs_clock": _energy(report, plt, tag),
        "steady_tokens_per_s_vs_clock": _per_window(
            report, plt, "tokens_per_s", "tokens per second",
            f"Tokens per second at steady state against SM clock{tag}",
        ),
        "steady_power_vs_clock": _per_window(
            report, plt, "mean_power_w", "GPU power, mean over the windows (W)",
            f"GPU power at steady state against SM clock{tag}",
        ),
    }  # fmt: skip


def steady_lines(report: Report) -> list[str]:
    """Per group, the energy-optimal clock of each phase at steady state and whether it stands apart from
    the top clock by more than their intervals."""
    if report.steady_optima.empty:
        return []
    lines = []
    for key, rows in report.steady_optima.groupby(STEADY_KEY, dropna=False, sort=False):
        verdicts = [steady_verdict({str(k): v for k, v in row.items()}) for row in rows.to_dict("records")]
        lines.append(f"{_label(report, key)}, steady state: " + "; ".join(verdicts) + ".")
    return lines


def steady_notes(report: Report) -> list[str]:
    """What a reader must know about the steady figures: how their intervals are drawn, and which
    per-request figures come from windows shorter than the sensor's update."""
    if report.steady.empty:
        return []
    notes = [
        "Steady state: each point also ran back-to-back prefill and decode windows at its clock; their "
        "energy per token is drawn with the wider of its measurement bound and the "
        f"{CONFIDENCE:.0%} t interval over its windows, and an optimum is separated from the top clock when "
        "those intervals do not overlap. The per-request energy per token beside it is each request's share "
        "of its batch's phase energy over its tokens (prefill: input tokens; decode: tokens after the first)."
    ]
    short = report.steady.dropna(subset=["short_window_share"])
    short = short[short["short_window_share"] > 0]
    if len(short):
        notes.append(
            f"Per-request figures at {short['point'].nunique()} point(s) include requests whose prefill or "
            "decode is shorter than one power-sensor update (short windows): their per-request energy per "
            "token is mostly the sensor's held value and compares only in aggregate; read the steady figures."
        )
    return notes
