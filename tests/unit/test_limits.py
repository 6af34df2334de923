"""Per-user request limits: a rate of requests and a share of the daemon's time, on an injected clock."""

from __future__ import annotations

import pytest

from gpuprof.daemon.server.limits import SERVICE_WINDOW, TIME_BURST_S, RequestLimits, ServiceTimes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_user_gets_a_seconds_worth_of_requests_at_once_then_the_rate() -> None:
    clock = Clock()
    limits = RequestLimits(rate_per_s=10, time_share=0.5, exempt_uids=frozenset({0}), clock=clock)
    assert [limits.admit(1000) for _ in range(10)] == [None] * 10
    refusal = limits.admit(1000)
    assert (
        refusal is not None and "more than 10 requests a second" in refusal and "retry in 0.10 s" in refusal
    )
    assert limits.admit(1001) is None  # another user is not held back by the first
    clock.now += 0.1
    assert limits.admit(1000) is None and limits.admit(1000) is not None
    assert limits.refused == {1000: 2}


def test_a_user_whose_requests_take_the_daemons_time_waits_for_their_share() -> None:
    clock = Clock()
    limits = RequestLimits(rate_per_s=1000, time_share=0.25, exempt_uids=frozenset(), clock=clock)
    assert limits.admit(7) is None
    limits.charge(7, TIME_BURST_S + 0.5)  # one slow request: a burst's worth and half a second more
    refusal = limits.admit(7)
    assert refusal is not None and "more than 25% of gpuprofd's time" in refusal
    assert "retry in 2.0 s" in refusal  # 0.5 s of debt at 0.25 s a second
    clock.now += 2.1
    assert limits.admit(7) is None


@pytest.mark.parametrize("uid", [0, 4242])
def test_root_and_the_daemons_own_user_are_never_limited(uid: int) -> None:
    limits = RequestLimits(rate_per_s=1, time_share=0.01, exempt_uids=frozenset({0, 4242}), clock=Clock())
    limits.charge(uid, 100.0)
    assert all(limits.admit(uid) is None for _ in range(100))


def test_service_times_summarize_the_last_window_of_each_request_type() -> None:
    times = ServiceTimes()
    for n in range(SERVICE_WINDOW + 500):
        times.add("jobs", 1.0 if n < 500 else 0.001)  # the slow ones have left the window
    times.add("refused", 0.0002)
    summary = times.summary()
    assert summary["jobs"] == {"count": SERVICE_WINDOW + 500, "p50_ms": 1.0, "p99_ms": 1.0, "max_ms": 1.0}
    assert summary["refused"]["count"] == 1 and summary["refused"]["max_ms"] == 0.2
