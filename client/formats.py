"""How the clients write numbers: one place for a figure with its unit, an energy with its bound, and what
a missing value reads as."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["energy", "number"]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(
    value: Any,
    unit: str = "",
    digits: int = 1,
    *,
    missing: str = "n/a",
    scale: float = 1.0,
    grouped: bool = True,
) -> str:
    """``value`` (times ``scale``) to ``digits`` decimals, thousands grouped unless ``grouped`` is False,
    then ``unit``; ``missing`` for None or NaN."""
    if _missing(value):
        return missing
    text = f"{value * scale:,.{digits}f}" if grouped else f"{value * scale:.{digits}f}"
    return f"{text} {unit}" if unit else text


def energy(value: float | None, bound: float | None, unbounded: str = "") -> str:
    """An energy in joules with its bound (``± b J``); ``unbounded`` follows one that has none."""
    if _missing(value):
        return "n/a"
    assert value is not None
    return f"{value:,.2f} J ± {bound:,.2f} J" if bound is not None else f"{value:,.2f} J{unbounded}"
