"""The wire protocol on bytes alone: every malformed request becomes a ProtocolError with the right code."""

from __future__ import annotations

import msgpack
import pytest

from gpuprof.client.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    decode_publish,
    decode_reply,
    decode_request,
    encode_error,
    encode_publish,
    encode_reply,
    encode_request,
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
