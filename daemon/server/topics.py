"""What a live-data subscription becomes: each user sees every GPU's samples and their own jobs' topics.

A topic is applied only in one of the forms the daemon publishes (``gpu/N`` of a GPU it serves,
``job/ID`` of a job id) or a prefix of one, and at most MAX_TOPIC_BYTES long; anything else is dropped.
A member's prefix of ``gpu/`` (``""`` included) becomes ``gpu/``; a member's ``job/ID`` must be one of
their jobs. An admin may subscribe to any well-formed topic or prefix (``""`` for everything).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gpuprof.client.wire.protocol import GPU_TOPIC_PREFIX, JOB_TOPIC_PREFIX, MAX_TOPIC_BYTES

_ID_CHARS = frozenset(b"0123456789abcdefghjkmnpqrstvwxyz")  # the job store's Crockford base32
JOB_ID_CHARS = 16


def well_formed(topic: bytes, gpus: Iterable[int]) -> bool:
    """Whether ``topic`` is a published topic, or a prefix of one."""
    if len(topic) > MAX_TOPIC_BYTES:
        return False
    if GPU_TOPIC_PREFIX.startswith(topic) or JOB_TOPIC_PREFIX.startswith(topic):
        return True
    if topic.startswith(GPU_TOPIC_PREFIX):
        digits = topic[len(GPU_TOPIC_PREFIX) :]
        return digits.isdigit() and any(str(gpu).encode().startswith(digits) for gpu in gpus)
    if topic.startswith(JOB_TOPIC_PREFIX):
        job_id = topic[len(JOB_TOPIC_PREFIX) :]
        return len(job_id) <= JOB_ID_CHARS and all(char in _ID_CHARS for char in job_id)
    return False


def allowed_topic(
    topic: bytes,
    gpus: Iterable[int],
    is_admin: bool,
    owns_job: Callable[[str], bool],
) -> bytes | None:
    """What a subscription to ``topic`` becomes for its caller; None when nothing of it may be seen.

    ``owns_job(id)`` says whether the caller may see that job (asked only for a whole job id).
    """
    gpus = list(gpus)
    if not well_formed(topic, gpus):
        return None
    if is_admin:
        return topic
    if topic.startswith(GPU_TOPIC_PREFIX):
        return topic
    if GPU_TOPIC_PREFIX.startswith(topic):  # "" or "g...": everything a member may see of the GPUs
        return GPU_TOPIC_PREFIX
    job_id = topic[len(JOB_TOPIC_PREFIX) :]
    if len(job_id) == JOB_ID_CHARS and owns_job(job_id.decode()):
        return topic
    return None
