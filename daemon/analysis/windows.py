"""Phase windows: a job's begin and end markers paired into the spans its energy is reported over."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..markers import Marker

__all__ = ["PhaseWindow", "windows"]


@dataclass(frozen=True)
class PhaseWindow:
    """A phase from its begin to its end marker; ``problem`` says why one edge was assumed, if it was."""

    name: str
    t_start_ns: int
    t_end_ns: int
    attrs: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def duration_ns(self) -> int:
        return self.t_end_ns - self.t_start_ns


def windows(
    markers: Iterable[Marker], start_ns: int | None = None, end_ns: int | None = None
) -> list[PhaseWindow]:
    """Pairs begin and end markers into windows, ordered by start.

    A begin and an end pair when they have the same name and the same ``id`` attribute (none counts as
    one); begins of the same pair key nest (the latest open one closes first). The window's attrs are the
    begin's updated with the end's. Unbalanced markers are kept with a ``problem``: a begin without end
    closes at ``end_ns`` (default: the last marker's time), an end without begin opens at ``start_ns``
    (default: the first marker's time).
    """
    markers = list(markers)
    if not markers:
        return []
    first = min(m.t_ns for m in markers) if start_ns is None else start_ns
    last = max(m.t_ns for m in markers) if end_ns is None else end_ns
    open_: dict[tuple[str, Any], list[Marker]] = collections.defaultdict(list)
    out: list[PhaseWindow] = []
    for marker in markers:
        key = (marker.name, _hashable(marker.attrs.get("id")))
        if marker.kind == "begin":
            open_[key].append(marker)
        elif marker.kind == "end":
            if open_[key]:
                begin = open_[key].pop()
                problem = "ends before it begins" if marker.t_ns < begin.t_ns else None
                attrs = {**begin.attrs, **marker.attrs}
                out.append(PhaseWindow(marker.name, begin.t_ns, marker.t_ns, attrs, problem))
            else:
                problem = "end without begin: assumed to start with the job"
                out.append(PhaseWindow(marker.name, first, marker.t_ns, dict(marker.attrs), problem))
    for pending in open_.values():
        for begin in pending:
            problem = "begin without end: assumed to last until the job ended"
            out.append(PhaseWindow(begin.name, begin.t_ns, max(last, begin.t_ns), dict(begin.attrs), problem))
    out.sort(key=lambda w: w.t_start_ns)
    return out


def _hashable(value: object) -> object:
    return value if isinstance(value, (str, int, float, type(None))) else repr(value)
