"""How the clients write numbers: one place for a figure with its unit, an energy with its bound, and what
a missing value reads as."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["bound_decimals", "energy", "number"]


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


def bound_decimals(bound: float | None, most: int = 4) -> int:
    """The decimals that show a bound to two significant digits (0 for 10 and more, at most ``most``):
    a figure is written to the same place, never finer than what is known of it."""
    if bound is None or _missing(bound) or bound <= 0 or math.isinf(bound):
        return 2
    return min(max(1 - math.floor(math.log10(bound)), 0), most)


def energy(value: float | None, bound: float | None, unbounded: str = "") -> str:
    """An energy in joules with its bound (``± b J``), both to the bound's second significant digit, the
    bound rounded up (``3,051 J ± 13 J``, ``20.8 J ± 5.3 J``); ``unbounded`` follows one that has none
    (two decimals)."""
    if _missing(value):
        return "n/a"
    assert value is not None
    if bound is None or _missing(bound):
        return f"{value:,.2f} J{unbounded}"
    places = bound_decimals(bound)
    shown = math.ceil(bound * 10**places - 1e-9) / 10**places  # a bound is rounded up, never down
    return f"{value:,.{places}f} J ± {shown:,.{places}f} J"
