"""A job's states, and the moves between them: queued, then running, then one final state."""

from __future__ import annotations

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = "succeeded", "failed", "cancelled", "interrupted"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED})
# Each state, and the states a job may be in to move to it. A queued job can end without running
# (cancelled, or interrupted by a daemon that stopped; failed when its worker cannot start).
TRANSITIONS: dict[str, frozenset[str]] = {
    RUNNING: frozenset({QUEUED}),
    SUCCEEDED: frozenset({RUNNING}),
    FAILED: frozenset({QUEUED, RUNNING}),
    CANCELLED: frozenset({QUEUED, RUNNING}),
    INTERRUPTED: frozenset({QUEUED, RUNNING}),
}
