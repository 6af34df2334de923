"""The wire protocol on bytes alone: every malformed request becomes a ProtocolError with the right code."""

from __future__ import annotations

import msgpack
import pytest

from gpuprof.client.wire.protocol import (
    MAX_ERROR_FRAME_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_publish,
    decode_reply,
    decode_request,
    encode_error,
    encode_publish,
    encode_reply,
    encode_request,
    excerpt,
    topic_for_gpu,
    topic_for_job,
)


def raw(message: object) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def test_request_round_trip() -> None:
    request = decode_request(encode_request("job", {"id": "abc"}, request_id=7))
    assert (request.type, request.id, request.body) == ("job", 7, {"id": "abc"})


def test_reply_and_error_round_trip() -> None:
    reply = decode_reply(encode_reply(3, {"jobs": []}))
    assert reply.ok and reply.id == 3 and reply.body == {"jobs": []}
    error = decode_reply(encode_error(4, "not_found", "no job 'x'"))
    assert not error.ok and error.code == "not_found" and error.message == "no job 'x'"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xc1\xff not msgpack", "bad_request"),
        (raw([1, 2, 3]), "bad_request"),
        (raw({"v": PROTOCOL_VERSION, "type": "gpus"}), "bad_request"),  # no id
        (raw({"v": PROTOCOL_VERSION, "type": "gpus", "id": True}), "bad_request"),  # bool is not an id
        (raw({"v": 99, "type": "gpus", "id": 1}), "unsupported_version"),
        (raw({"v": PROTOCOL_VERSION, "type": "rm -rf", "id": 1}), "unknown_type"),
        (raw({"v": PROTOCOL_VERSION, "type": "job", "id": 1, "body": {}}), "bad_request"),  # missing id
        (raw({"v": PROTOCOL_VERSION, "type": "job", "id": 1, "body": {"id": 5}}), "bad_request"),
        (raw({"v": PROTOCOL_VERSION, "type": "job", "id": 1, "body": {"id": "a", "x": 1}}), "bad_request"),
        (raw({"v": PROTOCOL_VERSION, "type": "jobs", "id": 1, "body": {"gpu": True}}), "bad_request"),
        (raw({"v": PROTOCOL_VERSION, "type": "jobs", "id": 1, "body": {"gpu": 2**63}}), "bad_request"),
        (raw({"v": PROTOCOL_VERSION, "type": "jobs", "id": 1, "body": {"limit": -1}}), "bad_request"),
        (raw({"v": PROTOCOL_VERSION, "type": "gpus", "id": 1, "body": []}), "bad_request"),
        (raw({"v": PROTOCOL_VERSION, "type": "gpus", "id": 1, "extra": 1}), "bad_request"),
        (
            raw({"v": PROTOCOL_VERSION, "type": "trace", "id": 1, "body": {"id": "a", "table": "x"}}),
            "bad_request",
        ),
        (
            raw({"v": PROTOCOL_VERSION, "type": "trace", "id": 1, "body": {"id": "a", "limit": 10**9}}),
            "bad_request",
        ),
    ],
)
def test_malformed_requests_are_refused_with_a_code(payload: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(payload)
    assert caught.value.code == code


def test_oversized_message_is_refused_before_decoding() -> None:
    payload = encode_request("submit", {"spec": {"x": "y" * 2000}}, 1)
    with pytest.raises(ProtocolError) as caught:
        decode_request(payload, max_bytes=1000)
    assert caught.value.code == "too_large"


def test_errors_keep_the_request_id_when_it_was_readable() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(raw({"v": PROTOCOL_VERSION, "type": "nope", "id": 42}))
    assert caught.value.request_id == 42


def test_publish_round_trip_and_topics() -> None:
    kind, body = decode_publish(encode_publish("samples", {"gpu": 1, "power_w": [1.5]}))
    assert kind == "samples" and body["power_w"] == [1.5]
    assert topic_for_gpu(3) == b"gpu/3" and topic_for_job("j1") == b"job/j1"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"v": PROTOCOL_VERSION, "type": ["hello"], "id": 1, "body": {}}, "unknown_type"),  # unhashable
        ({"v": PROTOCOL_VERSION, "type": {"a": 1}, "id": 1, "body": {}}, "unknown_type"),
        ({"v": PROTOCOL_VERSION, "type": b"hello", "id": 1, "body": {}}, "unknown_type"),
        ({"v": [1], "type": "hello", "id": 1}, "unsupported_version"),
        ({"v": True, "type": "hello", "id": 1}, "unsupported_version"),  # True == 1, but not a version
        ({"v": PROTOCOL_VERSION, "type": "hello", "id": [1]}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "type": "hello", "id": 1, "body": {b"client": "x"}}, "bad_request"),
        (
            {"v": PROTOCOL_VERSION, "type": "hello", "id": 1, "x": 1, b"y": 2},
            "bad_request",
        ),  # mixed key kinds
        ({"v": PROTOCOL_VERSION, "type": "hello", "id": 1, "body": {"versions": ["1"]}}, "bad_request"),
        (
            {"v": PROTOCOL_VERSION, "type": "hello", "id": 1, "body": {"versions": list(range(17))}},
            "bad_request",
        ),
        ({"v": PROTOCOL_VERSION, "type": "jobs", "id": 1, "body": {"state": "done"}}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "type": "jobs", "id": 1, "body": {"limit": 0}}, "bad_request"),  # 1..10,000
        ({"v": PROTOCOL_VERSION, "type": "jobs", "id": 1, "body": {"limit": 10_001}}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "type": "job", "id": 1, "body": {"id": "a" * 257}}, "bad_request"),
        (
            {"v": PROTOCOL_VERSION, "type": "history", "id": 1, "body": {"gpu": 0, "seconds": float("nan")}},
            "bad_request",
        ),
    ],
)
def test_every_field_is_type_checked_before_use(message: dict[object, object], code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(raw(message))
    assert caught.value.code == code
    assert len(caught.value.message) <= 400


def test_refusals_quote_a_short_escaped_excerpt_never_the_input() -> None:
    long_type = "x" * 500_000
    with pytest.raises(ProtocolError) as caught:
        decode_request(raw({"v": PROTOCOL_VERSION, "type": long_type, "id": 1}), max_bytes=1 << 20)
    assert "'xxx" in caught.value.message and "(500,000 chars)" in caught.value.message
    assert len(caught.value.message) < 300
    assert excerpt("a\nb\x00c") == "'a\\nb\\x00c'"  # escaped: no line breaks or NULs reach a log
    wide = excerpt("😀" * 10_000)  # 4 bytes a character: cut by bytes, the length still said
    assert wide.startswith("'😀") and wide.endswith("... (10,000 chars)") and len(wide.encode()) <= 200
    assert len(excerpt([[[[list(range(10**4))]]]])) < 100 and excerpt(b"\xff" * 3) == "b'\\xff\\xff\\xff'"


@pytest.mark.parametrize("text", ["é" * 5000, "😀" * 5000, "x" * 100_000])
def test_an_error_reply_frame_is_at_most_1_kib_whatever_it_says(text: str) -> None:
    frame = encode_error(2**63 - 1, "invalid_spec", text, key=text, problem=text)
    assert len(frame) <= MAX_ERROR_FRAME_BYTES
    reply = decode_reply(frame)
    assert reply.message.endswith("...") and reply.body["key"].endswith("...")
    assert reply.message.encode()[:-3].decode()  # cut on a character boundary


def test_a_spec_error_carries_its_key_and_problem() -> None:
    reply = decode_reply(
        encode_error(5, "invalid_spec", "<submitted spec>: gpu: no", key="gpu", problem="no")
    )
    assert (reply.code, reply.body) == ("invalid_spec", {"key": "gpu", "problem": "no"})
