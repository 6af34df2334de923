"""gpuprofd against a hostile client: fuzzed framing, messages, request fields, sizes and subscriptions.

Any member of the gpuprof group may send the daemon any bytes on either socket. Whatever they send, every
other user relies on the daemon to keep running, to answer a new client's ``hello`` within a second and to
keep its memory bounded; the sender gets at most one reply per message, and an error reply is at most
1 KiB (docs/protocol.md). One gpuprofd serves the module. An example that kills or stalls it fails, and
the next example starts on a new one (same state directory), so that hypothesis shrinks each failure on
its own; the failure's message ends with the daemon's log, where a crash leaves its traceback.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from daemon_harness import DaemonProcess, RawClient
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from gpuprof.client.wire import protocol

MAX_MESSAGE_BYTES = 64 * 1024  # below the 1 MiB default, so that oversized messages are cheap to send
DROPPED_ABOVE = MAX_MESSAGE_BYTES + 4096  # ZeroMQ drops a connection that sends a larger frame, unread
MAX_ERROR_FRAME_BYTES = 1024
HELLO_WITHIN_S = 1.0
REPLY_WITHIN_S = 5.0  # the fuzzing client's own replies: a valid history or jobs request takes a while
# The daemon starts at ~125 MB RSS on the simulated GPU; its 60 s history ring adds ~4 MB as it fills and
# SQLite and the allocator keep some slack. A leak of 1 KB per fuzzed message, or a single stored
# multi-MB topic (libzmq keeps subscriptions in a trie of ~30 bytes per topic byte), goes far past this.
MAX_RSS_GROWTH = 150 << 20
# One example's subscriptions: bounded topics cost nothing measurable; one 1 MB topic stored costs ~30 MB.
MAX_RSS_GROWTH_PER_SUBSCRIPTION_EXAMPLE = 16 << 20
# What one example (a few messages) may add to the daemon's log: a line is at most 1,000 characters and a
# traceback 8,000 (docs/protocol.md, "Limits"), while quoting a message whole would add up to 64 KiB.
MAX_LOG_GROWTH_PER_EXAMPLE = 32 << 10
NOT_FOR_ROOT = ("rate_limited", "quota_exceeded")  # root (these tests) and the daemon's user are exempt
# Clock changes allowed, so that a fuzzed dvfs section is checked against the GPU, not only denied.
CONFIG = f"max_message_bytes = {MAX_MESSAGE_BYTES}\nallow_dvfs = true\n"
SENTINEL_IDS = itertools.count(7_340_032_000_001)  # no generated request uses these: they end an exchange

FUZZ = settings(
    # Not the explain phase: each of its variants of a crash costs a daemon start.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    deadline=None,
    derandomize=True,  # CI sees the same examples on every run
    database=None,  # nothing written into the checkout; derandomize makes a failure reproducible anyway
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the daemon under attack --------------------------------------------------------------------------


class Gpuprofd:
    """The module's gpuprofd, started again (same state) whenever an example left it dead or stalled."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemon: DaemonProcess | None = None
        self.log_start = 0  # where this daemon's lines begin in the log
        self.example_log_start = 0
        self.baseline_rss = 0
        self.healthy = False
        self.finished_job = ""  # a real job's id, for requests that take one
        self.pub_endpoint = ""

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.daemon is not None and self.daemon.process is not None
        return self.daemon.process

    @property
    def endpoint(self) -> str:
        assert self.daemon is not None
        return self.daemon.endpoint

    def start(self) -> None:
        log = self.root / "gpuprofd.log"
        self.log_start = log.stat().st_size if log.exists() else 0
        with pytest.MonkeyPatch.context() as patch:  # its own simulated GPU, whichever test starts it
            patch.setenv("GPUPROF_SIM_STATE", str(self.root / "sim.state"))
            self.daemon = DaemonProcess(self.root, CONFIG).start()
        self.baseline_rss = self.rss()
        self.check()

    def stop(self) -> None:
        if self.daemon is None or self.process.poll() is not None:
            return
        try:
            self.daemon.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.daemon.kill(signal.SIGKILL)

    def begin(self) -> None:
        """Start an example on a healthy daemon: a failure of the one before is not this one's."""
        if not self.healthy:
            assert self.daemon is not None
            if self.process.poll() is None:
                self.daemon.kill(signal.SIGKILL)
            self.start()
        self.healthy = False  # until check() says so again
        self.example_log_start = self.log_size()

    def check(self) -> None:
        """What every other user relies on after any example: gpuprofd runs, a new client's hello is
        answered within HELLO_WITHIN_S, and its memory has not grown past MAX_RSS_GROWTH."""
        self.died()
        client = RawClient(self.endpoint)
        try:
            reply = client.request("hello", timeout_s=HELLO_WITHIN_S)
        except TimeoutError:
            raise AssertionError(f"a new client's hello went unanswered for {HELLO_WITHIN_S} s") from None
        finally:
            client.close()
        assert reply.ok, reply
        self.pub_endpoint = reply.body["pub_endpoint"]
        growth = self.rss() - self.baseline_rss
        assert growth <= MAX_RSS_GROWTH, f"gpuprofd's RSS grew by {growth >> 20} MB since it started"
        logged = self.log_size() - max(self.example_log_start, self.log_start)
        assert logged <= MAX_LOG_GROWTH_PER_EXAMPLE, f"gpuprofd logged {logged} bytes{self.log_tail()}"
        self.healthy = True

    def died(self) -> None:
        """Fail at once, with the log, when gpuprofd is no longer running."""
        if self.process.poll() is not None:
            raise AssertionError(f"gpuprofd died (exit status {self.process.returncode}){self.log_tail()}")

    def rss(self) -> int:
        """The daemon's resident memory in bytes (VmRSS)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kilobytes) * 1024

    def log_size(self) -> int:
        return (self.root / "gpuprofd.log").stat().st_size

    def log_tail(self) -> str:
        with open(self.root / "gpuprofd.log", "rb") as log:
            log.seek(self.log_start)
            text = log.read().decode(errors="replace")
        return f"; its log ends:\n{text[-3000:]}"

    def run_finished_job(self) -> str:
        """A short burn job, run to its end: its id serves the requests that name a job."""
        client = RawClient(self.endpoint)
        try:
            reply = client.request("submit", {"spec": SHORT_BURN})
            assert reply.ok, reply
            job_id = str(reply.body["job"]["id"])
            deadline = time.monotonic() + 30
            while client.request("job", {"id": job_id}).body["job"]["state"] != "succeeded":
                assert time.monotonic() < deadline, "the short burn job did not succeed"
                time.sleep(0.05)
            return job_id
        finally:
            client.close()


@pytest.fixture(scope="module")
def gpuprofd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpuprofd]:
    daemon = Gpuprofd(tmp_path_factory.mktemp("fuzz"))
    daemon.start()
    try:
        daemon.finished_job = daemon.run_finished_job()
        yield daemon
    finally:
        daemon.stop()


# -- msgpack a client may send ------------------------------------------------------------------------


class Packed(bytes):
    """Bytes already in msgpack form (deeper nesting than msgpack-python packs), put in as they are."""


class Pairs(tuple[tuple[Any, Any], ...]):
    """A msgpack map as its pairs: keys of any type (lists, maps), and the same key twice."""


class RealJob:
    """Stands for the id of a job the daemon holds (known only once it runs)."""


def encode(value: Any, job_id: str) -> bytes:
    """msgpack of ``value``, with Packed parts spliced in, Pairs as maps and RealJob as ``job_id``."""
    if isinstance(value, Packed):
        return bytes(value)
    if isinstance(value, RealJob):
        return encode(job_id, job_id)
    if isinstance(value, (dict, Pairs)):
        pairs = list(value.items()) if isinstance(value, dict) else list(value)
        head = _header(len(pairs), 0x80, 0xDE)
        return head + b"".join(encode(k, job_id) + encode(v, job_id) for k, v in pairs)
    if isinstance(value, list):
        return _header(len(value), 0x90, 0xDC) + b"".join(encode(v, job_id) for v in value)
    return bytes(msgpack.packb(value, use_bin_type=True))


def _header(count: int, fix: int, wide: int) -> bytes:
    """A map's or array's header: the fix form, or the 16-bit (``wide``) or 32-bit one."""
    if count < 16:
        return bytes([fix | count])
    if count < 1 << 16:
        return bytes([wide]) + struct.pack(">H", count)
    return bytes([wide + 1]) + struct.pack(">I", count)


def deep(depth: int) -> Packed:
    """A value ``depth`` arrays deep: [[[...nil...]]]."""
    return Packed(b"\x91" * depth + b"\xc0")


INTS = st.integers(-(2**63), 2**64 - 1) | st.sampled_from(
    [-1, 0, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
)
LONG_TEXT = st.integers(200, 8000).map(lambda n: "ü" * n)  # past any error message's quoting
LONG_BYTES = st.integers(200, 8000).map(lambda n: b"\xff" * n)
WIRE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(),  # NaN and infinities included
    st.text(max_size=20),
    st.binary(max_size=20),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16)),
    st.just(Packed(b"\xd6\xff\x00\x00\x00\x01")),  # a timestamp
    LONG_TEXT,
    LONG_BYTES,
    st.integers(1, 1000).map(deep),  # deeper than Python's repr goes, within msgpack-python's 1024 levels
)
# Maps with string keys: what the daemon's msgpack reader takes (strict_map_key) and passes on.
WIRE_VALUES = st.recursive(
    WIRE_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10,
)
KEYS = st.one_of(st.text(max_size=12), st.binary(max_size=8), INTS, st.none(), st.booleans(), st.floats())
# Anything msgpack can say, and some it cannot: other keys, a key twice, bad timestamps, 3,000 levels.
VALUES = st.recursive(
    WIRE_SCALARS | st.just(Packed(b"\xc7\x03\xff\x00\x00\x00")) | st.integers(1025, 3000).map(deep),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(KEYS, inner, max_size=4),
        st.lists(st.tuples(inner, inner), max_size=3).map(lambda pairs: Pairs(pairs)),
    ),
    max_leaves=10,
)

# A burn spec that would run for 0.05 s; the fuzz mostly breaks it (an accepted one is cancelled at once).
SHORT_BURN = {"workload": "burn", "timeout_s": 30, "burn": {"seconds": 0.05, "period_s": 0.05, "warmup_s": 0}}
# Specs the fuzz starts from, each section for the daemon to check (dvfs: against the simulated GPU).
BASE_SPECS = [
    SHORT_BURN,
    {**SHORT_BURN, "dvfs": {"sm_clocks": 1410, "memory_clock": 2619, "power_limit_w": 500, "snap": True}},
    {**SHORT_BURN, "dvfs": {"sm_clocks": [1410, 1980], "order": "sequential", "search": "energy"}},
    {**SHORT_BURN, "dvfs": {"sm_clocks": {"range": [1200, 1410, 105]}, "cooldown_s": 0}},
    {**SHORT_BURN, "dvfs": {"sm_clock_range": [990, 1500]}},
    {
        "workload": "llm",
        "timeout_s": 60,
        "llm": {
            "model": {"arch": "llama-3.2-1b-tiny"},
            "prompts": 1,
            "dataset": {"file": "/nonexistent.csv"},
        },
    },
]
SPEC_VALUES = st.one_of(
    WIRE_VALUES,
    st.none(),  # a key written with nothing after it
    st.sampled_from(["burn", "llm", "memcpy", "float32", "all", "~nosuchuser/x", "/tmp", "", "energy"]),
    st.sampled_from([0, 1, 255, 256, 1410, 86400, 604801, 10**6, -1, 2**63, math.inf, -math.inf, math.nan]),
    st.floats(0.01, 100),
    st.integers(900, 1000).map(deep),  # as deep as msgpack-python reads, deeper than repr goes
)


def _sections(spec: dict[Any, Any]) -> list[dict[Any, Any] | list[Any]]:
    """The spec's mappings and lists, two levels down (dvfs.sm_clocks.range is three)."""
    out: list[Any] = [spec]
    for value in list(spec.values()):
        if isinstance(value, (dict, list)):
            out.append(value)
            inner = value.values() if isinstance(value, dict) else value
            out += [v for v in inner if isinstance(v, (dict, list))]
    return [section for section in out if section]


@st.composite
def specs(draw: st.DrawFn) -> Any:
    """A base spec with 1-3 values in any of its sections set to others, keys added or dropped; now and
    then any value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(WIRE_VALUES)
    spec = copy.deepcopy(draw(st.sampled_from(BASE_SPECS)))
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(_sections(spec)))
        known = st.sampled_from(list(section) if isinstance(section, dict) else range(len(section)))
        action = draw(st.sampled_from(["set", "set", "set", "add", "drop"]))
        if action == "drop":
            section.pop(draw(known))
        elif action == "set" or isinstance(section, list):
            section[draw(known)] = draw(SPEC_VALUES)
        else:
            section[draw(st.text(max_size=12) | LONG_TEXT)] = draw(SPEC_VALUES)
    return spec


FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "client": st.text(max_size=20) | LONG_TEXT,
    "versions": st.lists(INTS, max_size=20) | st.lists(WIRE_VALUES, max_size=3),
    "spec": specs(),
    "spec_text": st.text(max_size=40) | st.integers(0, MAX_MESSAGE_BYTES - 4096).map(lambda n: "y" * n),
    "user": st.sampled_from(["root", "nobody", "", "../etc"]) | LONG_TEXT,
    "state": st.sampled_from(["queued", "running", "succeeded", "weird", ""]) | st.text(max_size=12),
    "gpu": INTS,
    "limit": INTS,
    "offset": INTS,
    "id": st.builds(RealJob) | st.sampled_from(["", "0", "../../etc/passwd", "\x00", "01m95sf06e7rbajk"]),
    "table": st.sampled_from(["samples", "energy", "requests", "", "sqlite_master"]),
    "seconds": st.floats() | INTS,
    "max_points": INTS,
    "slurm_job_id": st.sampled_from(["41", "0", "", "x", "1" * 13, "../41", "4\n1"]) | st.text(max_size=14),
    "slurm_gpus": st.lists(INTS, max_size=8) | st.lists(WIRE_VALUES, max_size=3),
}


def request_bodies(type_: str) -> st.SearchStrategy[Any]:
    """Bodies of ``type_``: its fields, mostly with values of their kind; now and then one missing or an
    unknown field."""
    schema = protocol.REQUEST_SCHEMAS[type_]
    values = {name: st.one_of(FIELD_VALUES[name], FIELD_VALUES[name], WIRE_VALUES) for name in schema}
    required = {name: values[name] for name, (_, needed) in schema.items() if needed}
    optional = {name: values[name] for name, (_, needed) in schema.items() if not needed}
    known = st.fixed_dictionaries(required, optional=optional)  # type: ignore[arg-type]
    unknown = st.dictionaries(st.text(max_size=12) | LONG_TEXT, WIRE_VALUES, min_size=1, max_size=2)
    return st.one_of(
        known,
        known,
        st.fixed_dictionaries({}, optional=values),  # type: ignore[arg-type]
        st.builds(lambda a, b: {**a, **b}, known, unknown),
    )


TYPES = sorted(protocol.REQUEST_SCHEMAS)
VALID_REQUESTS = st.sampled_from(TYPES).flatmap(
    lambda type_: st.fixed_dictionaries(
        {
            "v": st.just(1),
            "type": st.just(type_),
            "id": st.integers(0, 2**63 - 1),
            "body": request_bodies(type_),
        }
    )
)
REQUESTS = st.builds(
    lambda fields, extra: {**fields, **extra},
    st.fixed_dictionaries(
        {},
        optional={
            "v": st.just(1) | VALUES,
            "type": st.sampled_from(TYPES) | VALUES,
            "id": st.integers(0, 2**63 - 1) | VALUES,
            "body": st.sampled_from(TYPES).flatmap(request_bodies) | VALUES,
        },
    ),
    st.dictionaries(KEYS | LONG_TEXT, VALUES, max_size=2),
)


@st.composite
def broken_requests(draw: st.DrawFn) -> dict[Any, Any]:
    """A valid request with one or two fields given a value of any kind, dropped, or one field added."""
    message: dict[Any, Any] = dict(draw(VALID_REQUESTS))
    for _ in range(draw(st.integers(1, 2))):
        action = draw(st.sampled_from(["v", "type", "id", "body", "drop", "add"]))
        if action == "drop" and message:
            del message[draw(st.sampled_from(list(message)))]
        elif action == "add":
            message[draw(KEYS | LONG_TEXT)] = draw(VALUES)
        else:
            message[action] = draw(VALUES)
    return message


PAYLOADS = st.one_of(
    broken_requests(),
    REQUESTS,
    VALUES,
    st.lists(st.tuples(st.sampled_from(["v", "type", "id", "body"]) | VALUES, VALUES), max_size=5).map(
        lambda pairs: Pairs(pairs)
    ),
    st.binary(max_size=64).map(Packed),  # not msgpack, or msgpack cut short, or two values
    st.sampled_from(
        [Packed(b""), Packed(b"\xc1"), Packed(b"\xdf\xff\xff\xff\xff"), Packed(b"\xdd\xff\xff\xff\xff")]
    ),
    st.integers(1, 20_000).map(lambda n: Packed(b"\x81\xa1k" * n + b"\xc0")),  # maps n deep
)


# -- one exchange and its checks ----------------------------------------------------------------------


def exchange(gpuprofd: Gpuprofd, client: RawClient, messages: list[list[bytes]]) -> list[list[bytes]]:
    """Send ``messages`` pipelined, then a hello; the messages received before the hello's reply."""
    for frames in messages:
        client.socket.send_multipart(frames)
    sentinel = next(SENTINEL_IDS)
    client.socket.send(protocol.encode_request("hello", None, sentinel))
    received: list[list[bytes]] = []
    while True:
        deadline = time.monotonic() + REPLY_WITHIN_S
        while not client.socket.poll(100):
            gpuprofd.died()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no reply in {REPLY_WITHIN_S} s; got {len(received)} of {len(messages)}"
                )
        frames = client.socket.recv_multipart()
        if len(frames) == 1 and _reply_id(frames[0]) == sentinel:
            return received
        received.append(frames)
        assert len(received) <= len(messages), f"more replies than messages: {received}"


def _reply_id(frame: bytes) -> Any:
    with contextlib.suppress(Exception):
        message = msgpack.unpackb(frame, raw=False)
        if isinstance(message, dict) and message.get("type") == "reply":
            return message.get("id")
    return None


def sent_id(payload: bytes) -> int | None:
    """The request id a payload carries, as the daemon could read it."""
    try:
        message = msgpack.unpackb(payload, raw=False)
        value = message.get("id") if isinstance(message, dict) else None
    except Exception:
        return None
    return value if type(value) is int else None


def check_reply(sent: list[bytes], reply: list[bytes]) -> None:
    """One reply, for the message ``sent``: its framing, its form, an error's size and code."""
    if len(sent) == 1 or (len(sent) == 2 and sent[0] == b""):  # DEALER, or REQ after its delimiter
        assert reply[:-1] == sent[:-1], reply
        request_id = sent_id(sent[-1])
    else:  # any other framing: one bad_request frame (after a REQ's delimiter, if it began so), nothing run
        assert reply[:-1] == ([b""] if sent[0] == b"" else []), reply
        request_id = None
    frame = reply[-1]
    message = msgpack.unpackb(frame, raw=False)
    assert isinstance(message, dict) and set(message) == {"v", "type", "id", "body"}, message
    assert message["v"] == protocol.PROTOCOL_VERSION and isinstance(message["body"], dict), message
    if message["type"] == "reply":
        assert message["id"] == request_id and request_id is not None, (message["id"], request_id)
        event("reply: ok")
        return
    assert message["type"] == "error", message
    assert len(frame) <= MAX_ERROR_FRAME_BYTES, f"an error frame of {len(frame)} bytes: {frame[:300]!r}"
    assert message["id"] is None or message["id"] == request_id, (message["id"], request_id)
    body = message["body"]
    assert isinstance(body.get("message"), str), body
    assert body.get("code") in protocol.ERROR_CODES and body["code"] not in NOT_FOR_ROOT, body
    assert len(sent) == 1 or (len(sent) == 2 and sent[0] == b"") or body["code"] == "bad_request", body
    assert body["code"] != "internal", f"a client's message made a daemon bug: {body}"
    event(f"reply: {body['code']}")  # --hypothesis-show-statistics shows how far the fuzz got


def cancel_accepted(client: RawClient, bodies: list[dict[str, Any]]) -> None:
    """Cancel at once any job the fuzz got queued: it must not keep the GPU busy."""
    for body in bodies:
        job = body.get("job")
        if isinstance(job, dict) and job.get("state") in ("queued", "running"):
            client.request("cancel", {"id": job["id"]}, timeout_s=REPLY_WITHIN_S)


def fuzz_exchange(gpuprofd: Gpuprofd, messages: list[list[bytes]]) -> list[dict[str, Any]]:
    """One example: the messages and their replies checked, then the daemon's health; the replies."""
    assume(all(len(frame) <= DROPPED_ABOVE for frames in messages for frame in frames))  # see the size test
    gpuprofd.begin()
    client = RawClient(gpuprofd.endpoint)
    try:
        replies = exchange(gpuprofd, client, messages)
        assert len(replies) == len(messages), f"{len(replies)} replies to {len(messages)} messages"
        for sent, reply in zip(messages, replies, strict=True):
            check_reply(sent, reply)
        decoded = [msgpack.unpackb(reply[-1]) for reply in replies]
        cancel_accepted(client, [message["body"] for message in decoded if message["type"] == "reply"])
    finally:
        client.close()
    gpuprofd.check()
    return decoded


def framed(payloads: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[bool, Any]]:
    """A payload as a DEALER sends it (one frame) or as a REQ socket does (after an empty frame)."""
    return st.tuples(st.booleans(), payloads)


def frames_of(as_req: bool, payload: Any, job_id: str) -> list[bytes]:
    return [b"", encode(payload, job_id)] if as_req else [encode(payload, job_id)]


# -- the tests ----------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=300)
@given(messages=st.lists(framed(PAYLOADS), min_size=1, max_size=4))
def test_any_message_gets_one_bounded_reply_and_the_daemon_serves_on(
    gpuprofd: Gpuprofd, messages: list[tuple[bool, Any]]
) -> None:
    fuzz_exchange(
        gpuprofd, [frames_of(as_req, payload, gpuprofd.finished_job) for as_req, payload in messages]
    )


@settings(FUZZ, max_examples=300)
@given(messages=st.lists(framed(VALID_REQUESTS), min_size=1, max_size=3))
def test_every_request_type_with_fuzzed_fields_gets_one_bounded_reply(
    gpuprofd: Gpuprofd, messages: list[tuple[bool, Any]]
) -> None:
    fuzz_exchange(
        gpuprofd, [frames_of(as_req, payload, gpuprofd.finished_job) for as_req, payload in messages]
    )


@settings(FUZZ, max_examples=200)
@given(specs=st.lists(specs(), min_size=1, max_size=3))
def test_a_fuzzed_spec_is_refused_naming_its_key_or_queued(gpuprofd: Gpuprofd, specs: list[Any]) -> None:
    """Submits of broken specs (each accepted one cancelled at once): an invalid_spec error names the
    submitted spec and its key; nothing in a spec is a daemon bug."""
    requests = [{"v": 1, "type": "submit", "id": i, "body": {"spec": spec}} for i, spec in enumerate(specs)]
    for message in fuzz_exchange(gpuprofd, [[encode(request, "")] for request in requests]):
        if message["body"].get("code") == "invalid_spec":
            assert message["body"]["message"].startswith("<submitted spec>"), message


FRAMES = st.one_of(
    st.binary(max_size=32),
    st.just(b""),
    st.just(protocol.encode_request("hello", None, 1)),
    st.just(protocol.encode_request("jobs", {"limit": 1}, 2)),
)


@settings(FUZZ, max_examples=100)
@given(messages=st.lists(st.lists(FRAMES, min_size=1, max_size=5), min_size=1, max_size=3))
def test_any_framing_gets_one_reply_and_runs_nothing_but_a_single_request(
    gpuprofd: Gpuprofd, messages: list[list[bytes]]
) -> None:
    fuzz_exchange(gpuprofd, messages)


@settings(FUZZ, max_examples=16)
@given(
    size=st.integers(MAX_MESSAGE_BYTES + 1, DROPPED_ABOVE)
    | st.integers(DROPPED_ABOVE + 1, 4 * MAX_MESSAGE_BYTES),
    as_request=st.booleans(),
)
def test_an_oversized_message_is_refused_or_its_connection_dropped_and_the_client_reconnects(
    gpuprofd: Gpuprofd, size: int, as_request: bool
) -> None:
    gpuprofd.begin()
    payload = padded_submit(size) if as_request else b"\xc1" * size  # 0xc1 is never msgpack
    client = RawClient(gpuprofd.endpoint)
    try:
        if size <= DROPPED_ABOVE:
            (reply,) = exchange(gpuprofd, client, [[payload]])
            check_reply([payload], reply)
            assert msgpack.unpackb(reply[0])["body"]["code"] == "too_large"
        else:
            client.socket.send(payload)
            answered_after_reconnect(client)
    finally:
        client.close()
    gpuprofd.check()


def padded_submit(size: int) -> bytes:
    """A submit of ``size`` bytes, its spec text filling it."""
    empty = len(protocol.encode_request("submit", {"spec": SHORT_BURN, "spec_text": ""}, 9))
    for header in (2, 4):  # msgpack's str16 or str32 header is this much longer than an empty string's
        text = "z" * (size - empty - header)
        payload = protocol.encode_request("submit", {"spec": SHORT_BURN, "spec_text": text}, 9)
        if len(payload) == size:
            return payload
    raise AssertionError(f"no submit of exactly {size} bytes")


def answered_after_reconnect(client: RawClient) -> None:
    """The DEALER, its connection dropped, connects again by itself and is answered; nothing answers
    the message that was dropped. Hellos sent before the drop is noticed are lost with it: send until
    one is answered."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        request_id = next(SENTINEL_IDS)
        client.socket.send(protocol.encode_request("hello", None, request_id))
        while client.socket.poll(250):
            reply = protocol.decode_reply(client.socket.recv_multipart()[-1])
            assert reply.ok, f"an oversized message was answered instead of dropped: {reply}"
            if reply.id == request_id:
                return
    raise AssertionError("the client was not answered again within 10 s of its oversized message")


# -- live-data subscriptions --------------------------------------------------------------------------


class RawSubscriber:
    """A SUB peer speaking ZMTP 3.0 on a plain unix socket, which sends subscription messages of any size.

    libzmq's own SUB socket keeps each subscription it sends in a trie: a 10 MB topic would cost the test,
    not the daemon, a few hundred MB and a deep recursion.
    """

    def __init__(self, endpoint: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(endpoint.removeprefix("ipc://"))
        greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + bytes(32)
        ready = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", 3) + b"SUB"
        self.sock.sendall(greeting + _frame(ready, command=True))
        self.buffer = b""
        self._read(64)
        command = self.recv_frame()[1]
        if not command.startswith(b"\x05READY"):
            raise ConnectionRefusedError(f"gpuprofd refused the subscriber: {command[:100]!r}")

    def send(self, frames: list[bytes]) -> bool:
        """Send one message; False when gpuprofd dropped the connection (or stopped reading) meanwhile."""
        try:
            for index, frame in enumerate(frames):
                self.sock.sendall(_frame(frame, more=index < len(frames) - 1, header_only=True))
                self.sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return False
        return True

    def receives(self, topic: bytes, timeout_s: float = 5.0) -> bool:
        """Whether a message on ``topic`` arrives within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                flags, body = self.recv_frame()
                if not flags & 4 and body == topic:
                    return True
        except (OSError, ConnectionError):
            return False
        return False

    def recv_frame(self) -> tuple[int, bytes]:
        flags = self._read(1)[0]
        size = struct.unpack(">Q", self._read(8))[0] if flags & 2 else self._read(1)[0]
        return flags, self._read(size)

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionResetError("gpuprofd closed the subscriber's connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def close(self) -> None:
        self.sock.close()


def _frame(body: bytes, more: bool = False, command: bool = False, header_only: bool = False) -> bytes:
    flags = (1 if more else 0) | (4 if command else 0)
    head = bytes([flags, len(body)]) if len(body) < 256 else bytes([flags | 2]) + struct.pack(">Q", len(body))
    return head if header_only else head + body


TOPICS = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"g", b"gpu/", b"gpu/0", b"gpu/01", b"gpu/99", b"job/", b"job/..", b"\xff" * 64]),
    st.tuples(st.binary(min_size=1, max_size=8), st.integers(1 << 20, 10 << 20)).map(
        lambda pattern: (pattern[0] * (pattern[1] // len(pattern[0]) + 1))[: pattern[1]]
    ),
)
SUBSCRIPTION_MESSAGES = st.one_of(
    TOPICS.map(lambda topic: [b"\x01" + topic]),
    TOPICS.map(lambda topic: [b"\x00" + topic]),
    st.lists(st.binary(max_size=40), min_size=1, max_size=3),  # anything else a peer may send
)


@settings(FUZZ, max_examples=40)
@given(messages=st.lists(SUBSCRIPTION_MESSAGES, min_size=1, max_size=4))
def test_any_subscription_leaves_the_daemon_serving_in_bounded_memory_with_live_data(
    gpuprofd: Gpuprofd, messages: list[list[bytes]]
) -> None:
    gpuprofd.begin()
    before = gpuprofd.rss()
    hostile = RawSubscriber(gpuprofd.pub_endpoint)
    try:
        for frames in messages:
            if not hostile.send(frames):
                break  # dropped: a message over protocol.MAX_SUBSCRIPTION_BYTES
        # A subscription after the hostile ones, on the same connection when it was kept: its samples
        # arriving means gpuprofd has taken in all that came before, and that live data still flows.
        if not (hostile.send([b"\x01gpu/0"]) and hostile.receives(b"gpu/0")):
            viewer = RawSubscriber(gpuprofd.pub_endpoint)
            try:
                assert viewer.send([b"\x01gpu/0"]) and viewer.receives(b"gpu/0"), "no live samples any more"
            finally:
                viewer.close()
        growth = gpuprofd.rss() - before
        assert growth <= MAX_RSS_GROWTH_PER_SUBSCRIPTION_EXAMPLE, f"gpuprofd's RSS grew by {growth >> 20} MB"
    finally:
        hostile.close()
    gpuprofd.check()


def test_the_fuzzed_daemon_ran_a_real_job_first(gpuprofd: Gpuprofd) -> None:
    """Requests that name a job reach a real one (a finished burn job); otherwise only not_found is fuzzed."""
    client = RawClient(gpuprofd.endpoint)
    try:
        reply = client.request("job", {"id": gpuprofd.finished_job})
    finally:
        client.close()
    assert reply.ok and reply.body["job"]["state"] == "succeeded", reply
