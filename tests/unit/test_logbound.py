"""gpuprofd's log stays bounded: lines are clipped, a message repeated too often is counted, not logged."""

from __future__ import annotations

import logging

import pytest

from gpuprof.daemon.server.logbound import BURST, MAX_LINE_CHARS, WINDOW_S, BoundedLog, Bugs


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> tuple[logging.Logger, list[str], Clock]:
    clock = Clock()
    logger = logging.getLogger("gpuprofd-test-bounded")
    logger.handlers.clear()
    logger.filters.clear()
    logger.propagate = False
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger.addHandler(Collect())
    logger.addFilter(BoundedLog(clock))
    return logger, lines, clock


def test_a_line_is_clipped_whatever_a_client_sent(logged: tuple[logging.Logger, list[str], Clock]) -> None:
    logger, lines, _ = logged
    logger.warning("ignored a subscription to %s", "x" * 1_000_000)
    assert len(lines) == 1 and len(lines[0]) <= MAX_LINE_CHARS and lines[0].endswith("(1,000,026 chars)")


def test_a_repeated_message_is_logged_a_burst_at_a_time_then_counted(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, lines, clock = logged

    def refuse(n: int) -> None:
        logger.warning("refused request %d", n)  # one call site, as in the daemon

    for n in range(BURST * 50):
        refuse(n)
    assert len(lines) == BURST
    logger.warning("another message")  # its own call site: not held back by the first
    assert len(lines) == BURST + 1
    clock.now += WINDOW_S
    for n in range(3):
        refuse(n)
    assert len(lines) == BURST + 4
    assert f"({BURST * 49} more like this in the last {WINDOW_S:g} s not logged)" in lines[BURST + 1]


def test_a_bug_is_logged_with_its_traceback_once_then_counted(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, lines, _ = logged
    bugs = Bugs(logger)

    def fail(n: int) -> None:
        raise KeyError(f"missing {n}")

    for n in range(3):
        try:
            fail(n)
        except KeyError:
            bugs.log("request jobs")
    try:
        raise ValueError("another")
    except ValueError:
        bugs.log("request jobs")
    assert bugs.total == 4 and len(lines) == 4
    assert lines[0].startswith("request jobs failed (a bug in gpuprofd, which goes on)\nTraceback")
    again = (
        "request jobs failed again: KeyError: 'missing 2' (3 times; its traceback was logged the first time)"
    )
    assert lines[2] == again
    assert "Traceback" in lines[3] and "ValueError: another" in lines[3]  # a different bug: its own traceback
