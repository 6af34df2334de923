"""Phase markers: the message format, malformed input counted rather than raised, begin/end pairing."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from pathlib import Path

import msgpack
import pytest

from gpuprof.daemon.analysis.windows import PhaseWindow, windows
from gpuprof.daemon.markers import MAX_MARKER_BYTES, Marker, MarkerError, decode_marker, encode_marker
from gpuprof.daemon.server.markers import MarkerReader


def pack(message: object) -> bytes:
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


GOOD = {"v": 1, "kind": "begin", "name": "step", "t_ns": 123, "attrs": {"index": 0}}


@pytest.mark.parametrize("kind", ["begin", "end", "event", "status", "fail"])
def test_every_kind_round_trips(kind: str) -> None:
    marker = Marker(kind, "load", 5_000_000_000, {"a": [1, 2.5, None, True, "x"], "b": {"c": -1}})
    data = encode_marker(marker)
    assert msgpack.unpackb(data) == {
        "v": 1,
        "kind": kind,
        "name": "load",
        "t_ns": 5_000_000_000,
        "attrs": marker.attrs,
    }
    assert decode_marker(data) == marker


def test_attrs_may_be_left_out() -> None:
    assert decode_marker(pack({"v": 1, "kind": "end", "name": "x", "t_ns": 1})) == Marker("end", "x", 1, {})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a msgpack message"),
        (b"\xc1", "not a msgpack message"),
        (pack(GOOD)[:-3], "not a msgpack message"),
        (pack(GOOD) + b"\x00", "not a msgpack message"),  # trailing bytes
        (b"\xa2\xff\xfe", "not a msgpack message"),  # a str that is not UTF-8
        (pack([1, "begin", "x", 1]), "message must be a map, got list"),
        (pack({**GOOD, "extra": 1}), "must have the fields v, kind, name, t_ns"),
        (pack({k: v for k, v in GOOD.items() if k != "t_ns"}), "must have the fields"),
        (pack({**GOOD, "v": 2}), "unsupported marker version 2"),
        (pack({**GOOD, "v": True}), "unsupported marker version True"),
        (pack({**GOOD, "kind": "start"}), "kind must be one of begin, end, event, status, fail, got 'start'"),
        (pack({**GOOD, "kind": 1}), "kind must be one of"),
        (pack({**GOOD, "name": b"step"}), "name must match"),
        (pack({**GOOD, "name": ""}), "name must match"),
        (pack({**GOOD, "name": "a b"}), "name must match"),
        (pack({**GOOD, "name": "x" * 65}), "name must match"),
        (pack({**GOOD, "t_ns": 1.5}), "t_ns must be a positive 64-bit integer, got 1.5"),
        (pack({**GOOD, "t_ns": -1}), "t_ns must be a positive 64-bit integer"),
        (pack({**GOOD, "t_ns": 2**64 - 1}), "t_ns must be a positive 64-bit integer"),
        (pack({**GOOD, "t_ns": True}), "t_ns must be a positive 64-bit integer"),
        (pack({**GOOD, "attrs": [1]}), "attrs must be a map, got list"),
        (pack({**GOOD, "attrs": {"a": b"raw"}}), "attrs.a: unsupported type bytes"),
        (pack({**GOOD, "attrs": {"a": float("nan")}}), "attrs.a: must be finite"),
        (pack({**GOOD, "attrs": {"a": msgpack.ExtType(5, b"x")}}), "attrs.a: unsupported type ExtType"),
        (pack({**GOOD, "attrs": {"a": {b"k": 1}}}), "attrs.a: keys must be strings"),
        (pack({**GOOD, "attrs": {"a": [[[[[[[[[[1]]]]]]]]]]}}), "nested deeper than 8 levels"),
        (pack({1: 2}), "not a msgpack message"),  # an integer map key (strict_map_key)
        (pack({**GOOD, "attrs": {"a": "x" * MAX_MARKER_BYTES}}), "message larger than 65536 bytes"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(MarkerError, match=message.replace("(", r"\(").replace("[", r"\[")):
        decode_marker(data)


def test_the_writer_side_refuses_what_the_reader_would() -> None:
    with pytest.raises(MarkerError, match="name must match"):
        encode_marker(Marker("begin", "no spaces", 1))
    with pytest.raises(MarkerError, match="unsupported type set"):
        encode_marker(Marker("event", "x", 1, {"s": {1}}))
    with pytest.raises(MarkerError, match="bytes; at most 65536"):
        encode_marker(Marker("event", "x", 1, {"s": "x" * MAX_MARKER_BYTES}))


class FakeSocket:
    """Datagrams to deliver in order, then EOF (b""), as a SOCK_SEQPACKET socket would."""

    def __init__(self, datagrams: Iterable[bytes | None], eof: bool = True) -> None:
        self.datagrams = list(datagrams)  # None: nothing available now (EAGAIN)
        self.eof = eof
        self.sizes: list[int] = []

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.sizes.append(bufsize)
        if not self.datagrams:
            if self.eof:
                return b""
            raise BlockingIOError
        data = self.datagrams.pop(0)
        if data is None:
            if not flags & socket.MSG_DONTWAIT:
                raise AssertionError("a blocking read was made to wait")
            raise BlockingIOError
        return data[:bufsize]  # a longer record is cut, as the kernel does

    def fileno(self) -> int:
        return 99

    def close(self) -> None:
        pass


def marker_bytes(kind: str, name: str, t_ns: int, **attrs: object) -> bytes:
    return encode_marker(Marker(kind, name, t_ns, dict(attrs)))


def test_the_reader_counts_bad_messages_and_goes_on() -> None:
    oversized = pack({**GOOD, "attrs": {"a": "x" * (2 * MAX_MARKER_BYTES)}})
    fake = FakeSocket([marker_bytes("begin", "load", 1), b"junk", oversized, marker_bytes("end", "load", 2)])
    reader = MarkerReader(fake)
    assert [(m.kind, m.t_ns) for m in reader] == [("begin", 1), ("end", 2)]
    assert reader.closed and reader.received == 2 and reader.errors == 2
    assert "not a msgpack message" in reader.error_messages[0]
    assert "larger than 65536 bytes" in reader.error_messages[1]
    assert set(fake.sizes) == {MAX_MARKER_BYTES + 1}  # one byte more than allowed reveals a cut record


def test_read_available_returns_what_is_waiting_without_blocking() -> None:
    fake = FakeSocket([marker_bytes("begin", "a", 1), None, marker_bytes("end", "a", 2)], eof=False)
    reader = MarkerReader(fake)
    assert [m.t_ns for m in reader.read_available()] == [1]
    assert [m.t_ns for m in reader.read_available()] == [2]
    assert reader.read_available() == [] and not reader.closed
    fake.eof = True
    assert reader.read_available() == [] and reader.closed


def test_the_reader_keeps_at_most_max_markers() -> None:
    reader = MarkerReader(FakeSocket([marker_bytes("event", "e", t) for t in range(1, 6)]), max_markers=3)
    assert len(list(reader)) == 3 and reader.errors == 2
    assert "more than 3 markers kept" in reader.error_messages[-1]


def test_a_flooding_worker_is_read_a_batch_at_a_time_and_kept_to_a_byte_budget() -> None:
    flood = [marker_bytes("event", "e", t, blob="x" * 1000) for t in range(1, 1001)]
    reader = MarkerReader(FakeSocket(flood, eof=False), max_bytes=100 * len(flood[0]))
    first = reader.read_available(limit=256)
    assert len(first) == 100 and reader.more_waiting  # the daemon's loop gets its turn back
    assert reader.bytes == 100 * len(flood[0]) and reader.errors == 156
    assert f"more than {100 * len(flood[0]):,} bytes of markers kept" in reader.error_messages[-1]
    while reader.more_waiting:
        assert reader.read_available(limit=256) == []
    assert reader.received == 100 and reader.errors == 900 and not reader.closed


def m(kind: str, name: str, t_ns: int, **attrs: object) -> Marker:
    return Marker(kind, name, t_ns, dict(attrs))


def test_windows_pair_begins_and_ends_in_start_order() -> None:
    markers = [
        m("begin", "load", 10),
        m("end", "load", 20, device="x"),
        m("status", "status", 21, text="hi"),
        m("begin", "measure", 30),
        m("begin", "step", 31, index=0),
        m("event", "tick", 32),
        m("end", "step", 40, index=0, ops=5),
        m("end", "measure", 50, steps=1),
    ]
    assert windows(markers) == [
        PhaseWindow("load", 10, 20, {"device": "x"}),
        PhaseWindow("measure", 30, 50, {"steps": 1}),
        PhaseWindow("step", 31, 40, {"index": 0, "ops": 5}),
    ]
    assert windows(markers)[2].duration_ns == 9
    assert windows([]) == []


def test_same_name_windows_nest_and_ids_keep_them_apart() -> None:
    nested = windows([m("begin", "a", 1), m("begin", "a", 2), m("end", "a", 3), m("end", "a", 4)])
    assert [(w.t_start_ns, w.t_end_ns) for w in nested] == [(1, 4), (2, 3)]
    overlapping = windows(
        [
            m("begin", "req", 1, id=1),
            m("begin", "req", 2, id=2),
            m("end", "req", 3, id=1),
            m("end", "req", 4, id=2),
        ]
    )
    assert [(w.t_start_ns, w.t_end_ns, w.attrs["id"]) for w in overlapping] == [(1, 3, 1), (2, 4, 2)]


def test_unbalanced_markers_are_kept_with_a_problem() -> None:
    markers = [m("begin", "load", 10), m("end", "warmup", 20), m("begin", "step", 30), m("end", "load", 40)]
    found = windows(markers, start_ns=5, end_ns=100)
    assert found == [
        PhaseWindow("warmup", 5, 20, {}, "end without begin: assumed to start with the job"),
        PhaseWindow("load", 10, 40, {}),
        PhaseWindow("step", 30, 100, {}, "begin without end: assumed to last until the job ended"),
    ]
    by_default = windows(markers)  # the job's edges default to the first and last markers
    assert [(w.t_start_ns, w.t_end_ns) for w in by_default] == [(10, 20), (10, 40), (30, 40)]
    backwards = windows([m("begin", "x", 10), m("end", "x", 5)])
    assert backwards == [PhaseWindow("x", 10, 5, {}, "ends before it begins")]


def test_a_programs_status_line_carries_its_share_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gpuprof.markers as program_markers

    channel = tmp_path / "markers"
    channel.touch()
    monkeypatch.setenv("GPUPROF_MARKERS", str(channel))
    monkeypatch.setattr(program_markers, "_fd", None)
    program_markers.status("batch 3 of 8", done=3, total=8)
    program_markers.status("warming up")
    lines = [json.loads(line) for line in channel.read_text().splitlines()]
    assert [line["attrs"] for line in lines] == [
        {"text": "batch 3 of 8", "done": 3, "total": 8},
        {"text": "warming up"},
    ]
