"""gpuprofd's log, bounded: no line longer than MAX_LINE_CHARS, no message repeated without limit.

What a client sends can end up in a log line (a refused subscription, a denied request). Every record of
the ``gpuprofd`` logger goes through ``BoundedLog``: its text is cut to MAX_LINE_CHARS (a traceback to
MAX_TRACEBACK_CHARS), and each call site (the message's format string) may log at most BURST lines per
WINDOW_S; the lines it could not log are counted and said in its next line once the window turns.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable

MAX_BUGS = 256  # distinct bugs remembered; a new one beyond it is still logged, only not remembered
MAX_LINE_CHARS = 1000
MAX_TRACEBACK_CHARS = 8000
BURST = 20
WINDOW_S = 60.0


class BoundedLog(logging.Filter):
    """A filter that clips every record and limits how often each message may be logged."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._windows: dict[tuple[str, int], tuple[float, int, int]] = {}  # site -> (start, logged, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        site = (str(record.pathname), record.lineno)
        now = self._clock()
        start, logged, dropped = self._windows.get(site, (now, 0, 0))
        if now - start >= WINDOW_S:
            start, logged, suppressed, dropped = now, 0, dropped, 0
        else:
            suppressed = 0
        if logged >= BURST:
            self._windows[site] = (start, logged, dropped + 1)
            return False
        self._windows[site] = (start, logged + 1, dropped)
        text = _clip(record.getMessage(), MAX_LINE_CHARS)
        if suppressed:
            text += f" ({suppressed} more like this in the last {WINDOW_S:g} s not logged)"
        record.msg, record.args = text, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _clip(logging.Formatter().formatException(record.exc_info), MAX_TRACEBACK_CHARS)
        return True


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    tail = f"... ({len(text):,} chars)"
    return text[: limit - len(tail)] + tail


def install(logger: logging.Logger) -> BoundedLog:
    """Put a BoundedLog on ``logger`` (once) and return it."""
    for existing in logger.filters:
        if isinstance(existing, BoundedLog):
            return existing
    bounded = BoundedLog()
    logger.addFilter(bounded)
    return bounded


class Bugs:
    """Bugs met while serving: each distinct one (what failed, the exception's type and where it was raised)
    is logged with its traceback the first time, and counted, in one line, every time after."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.total = 0
        self._seen: dict[tuple[str, str, str, int], int] = {}

    def log(self, what: str) -> None:
        """Log the exception being handled (call from an ``except`` block) as a bug in ``what``."""
        kind, error, trace = sys.exc_info()
        frames = traceback.extract_tb(trace) if trace is not None else []
        where = (frames[-1].filename, frames[-1].lineno or 0) if frames else ("", 0)
        key = (what, kind.__name__ if kind else "?", *where)
        count = self._seen.get(key, 0) + 1
        if key in self._seen or len(self._seen) < MAX_BUGS:
            self._seen[key] = count
        self.total += 1
        if count == 1:
            self.logger.exception("%s failed (a bug in gpuprofd, which goes on)", what)
        else:
            self.logger.error(
                "%s failed again: %s: %s (%d times; its traceback was logged the first time)",
                what,
                key[1],
                _clip(str(error), 200),
                count,
            )
