"""Per-user limits: how many requests a user may send, how much of gpuprofd's time they may take; and
the time each type of request takes to answer, which those limits charge.

Each user (by uid) has two token buckets: one of requests (``request_rate_per_user`` a second, a second's
worth at once) and one of the daemon's time spent serving them (``request_time_share_per_user`` seconds a
second, at most one second at once; a request is charged what it took after it is answered). A request
that finds either empty is refused with ``rate_limited`` before it is decoded. Root and the daemon's own
account are not limited: they run the node. Queued jobs per user are counted by the job store at submit.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SERVICE_WINDOW = 1000  # requests of each type whose service times ``stats`` summarizes
TIME_BURST_S = 1.0  # a user may take this much of the daemon's time at once, then their share
IDLE_FORGET_S = 600.0  # a user's buckets are dropped after this long without a request


@dataclass
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; tokens may be charged below zero (a debt paid in time)."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_s(self) -> float:
        """Seconds until a token is there (0 when one is)."""
        return 0.0 if self.tokens >= 1.0 or self.rate <= 0 else (1.0 - self.tokens) / self.rate


@dataclass
class _UserBuckets:
    requests: TokenBucket
    time: TokenBucket


class RequestLimits:
    """Admits or refuses each request of a uid, and charges the time its answer took."""

    def __init__(
        self,
        rate_per_s: float,
        time_share: float,
        exempt_uids: frozenset[int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.time_share = time_share
        self.exempt_uids = exempt_uids
        self._clock = clock
        self._users: dict[int, _UserBuckets] = {}
        self._last_sweep = clock()
        self.refused: dict[int, int] = {}  # uid -> requests refused

    def _buckets(self, uid: int, now: float) -> _UserBuckets:
        if now - self._last_sweep > IDLE_FORGET_S:  # keeps the map as small as the set of active users
            self._users = {u: b for u, b in self._users.items() if now - b.requests.stamp < IDLE_FORGET_S}
            self._last_sweep = now
        buckets = self._users.get(uid)
        if buckets is None:
            buckets = _UserBuckets(
                TokenBucket(self.rate_per_s, max(1.0, self.rate_per_s), max(1.0, self.rate_per_s), now),
                TokenBucket(self.time_share, TIME_BURST_S, TIME_BURST_S, now),
            )
            self._users[uid] = buckets
        buckets.requests.refill(now)
        buckets.time.refill(now)
        return buckets

    def admit(self, uid: int) -> str | None:
        """None when ``uid`` may send this request now, else why not (for a ``rate_limited`` error)."""
        if uid in self.exempt_uids:
            return None
        buckets = self._buckets(uid, self._clock())
        if buckets.time.tokens <= 0:
            self.refused[uid] = self.refused.get(uid, 0) + 1
            return (
                f"your requests took more than {self.time_share:.0%} of gpuprofd's time "
                f"(request_time_share_per_user); retry in {-buckets.time.tokens / self.time_share:.1f} s"
            )
        if buckets.requests.tokens < 1.0:
            self.refused[uid] = self.refused.get(uid, 0) + 1
            return (
                f"more than {self.rate_per_s:g} requests a second (request_rate_per_user); "
                f"retry in {buckets.requests.wait_s():.2f} s"
            )
        buckets.requests.tokens -= 1.0
        return None

    def charge(self, uid: int, seconds: float) -> None:
        """Count ``seconds`` of the daemon's time against ``uid``'s share."""
        if uid in self.exempt_uids:
            return
        self._buckets(uid, self._clock()).time.tokens -= seconds


class ServiceTimes:
    """How long gpuprofd took to answer each type of request (``refused``: never decoded), over the last
    SERVICE_WINDOW of each: the daemon's own time, whatever the client's scheduling adds to a round trip."""

    def __init__(self) -> None:
        self._times: dict[str, collections.deque[float]] = {}
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, seconds: float) -> None:
        self._times.setdefault(kind, collections.deque(maxlen=SERVICE_WINDOW)).append(seconds)
        self._counts[kind] += 1

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Per type: ``count`` (since start), and ``p50_ms``, ``p99_ms``, ``max_ms`` of the window."""
        out: dict[str, dict[str, float | int]] = {}
        for kind, times in self._times.items():
            p50, p99 = np.percentile(np.fromiter(times, float, len(times)), [50, 99]) * 1000
            out[kind] = {
                "count": self._counts[kind],
                "p50_ms": round(float(p50), 3),
                "p99_ms": round(float(p99), 3),
                "max_ms": round(max(times) * 1000, 3),
            }
        return out
