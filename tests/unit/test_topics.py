"""Live-data subscriptions: only the daemon's own topic forms, bounded, and each user's own jobs."""

from __future__ import annotations

import pytest

from gpuprof.daemon.server.topics import allowed_topic, well_formed

JOB = "01jb4x9k2m3n4p5q"
OTHER = "01jb4x9k2m3n4p5r"


def member(topic: bytes) -> bytes | None:
    return allowed_topic(topic, [0, 1, 12], is_admin=False, owns_job=lambda job_id: job_id == JOB)


def admin(topic: bytes) -> bytes | None:
    return allowed_topic(topic, [0, 1, 12], is_admin=True, owns_job=lambda job_id: False)


@pytest.mark.parametrize(
    ("topic", "becomes"),
    [
        (b"", b"gpu/"),  # everything: for a member, every GPU's samples
        (b"g", b"gpu/"),
        (b"gpu/", b"gpu/"),
        (b"gpu/1", b"gpu/1"),
        (b"gpu/12", b"gpu/12"),
        (b"job/" + JOB.encode(), b"job/" + JOB.encode()),
        (b"job/" + OTHER.encode(), None),  # someone else's job
        (b"job/", None),  # every job's messages are an admin's
        (b"job/" + JOB[:8].encode(), None),
        (b"gpu/7", None),  # a GPU the daemon does not serve
        (b"gpu/x", None),
        (b"gpu/" + b"1" * 2_000_000, None),  # the trie of topics would grow by a node per byte
        (b"\x00\xff", None),
        (b"job/" + b"a" * 17, None),
    ],
)
def test_a_member_gets_every_gpu_and_their_own_jobs_only(topic: bytes, becomes: bytes | None) -> None:
    assert member(topic) == becomes


def test_an_admin_gets_any_well_formed_topic_or_prefix_and_nothing_longer() -> None:
    assert admin(b"") == b"" and admin(b"job/") == b"job/" and admin(b"job/" + OTHER.encode())
    assert admin(b"job/" + b"0" * 16) == b"job/" + b"0" * 16
    assert admin(b"x" * 10_000_000) is None and admin(b"job/" + b"0" * 60) is None
    assert admin(b"gpu/99") is None and admin(b"job/ILOU") is None  # not in the ids' alphabet
    assert not well_formed(b"gpu/0" + b"0" * 64, [0])
