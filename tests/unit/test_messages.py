"""The typed messages of the contract (client/wire/messages.py): what goes on the wire, and what a client
accepts back."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from gpuprof.client.wire.messages import GpuInfo, JobInfo
from gpuprof.client.wire.protocol import ProtocolError

GPU = GpuInfo(
    index=1,
    name="NVIDIA H100 80GB HBM3",
    uuid="GPU-0001",
    simulated=False,
    memory_clocks_mhz=(2619,),
    graphics_clocks_mhz=(1980, 1410, 345),
    power_limit_w=700.0,
    min_power_limit_w=200.0,
    max_power_limit_w=700.0,
)
JOB = JobInfo(
    id="0000000001abcdef",
    name="burn",
    user="alice",
    uid=1001,
    gpu=0,
    state="succeeded",
    reason=None,
    created_ns=1,
    started_ns=2,
    finished_ns=3,
    spec={"workload": "burn"},
    spec_text="workload: burn\n",
    result={"energy_counter_j": 12.5},
    simulated=True,
    worker_uid=1001,
)


def wire(message: GpuInfo | JobInfo) -> Any:
    return msgpack.unpackb(msgpack.packb(message.to_dict()), raw=False)


def test_a_gpu_and_a_job_come_back_as_they_went() -> None:
    assert GpuInfo.from_dict(wire(GPU)) == GPU
    assert JobInfo.from_dict(wire(JOB)) == JOB and JOB.finished
    assert wire(GPU)["graphics_clocks_mhz"] == [1980, 1410, 345]


def test_a_field_a_newer_daemon_adds_is_ignored() -> None:
    assert GpuInfo.from_dict({**GPU.to_dict(), "mig": True}) == GPU
    listed = {k: v for k, v in JOB.to_dict().items() if k != "spec_text"}  # listings leave it out
    assert JobInfo.from_dict(listed).spec_text == ""


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"index": "1"}, "index is a str"),
        ({"simulated": 1}, "simulated is a int"),
        ({"power_limit_w": True}, "power_limit_w is a bool"),
        ({"graphics_clocks_mhz": [1980, "x"]}, "not an integer"),
    ],
)
def test_a_mistyped_gpu_map_is_a_protocol_error(change: dict[str, Any], says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        GpuInfo.from_dict({**GPU.to_dict(), **change})


def test_a_job_map_needs_its_fields_and_a_known_state() -> None:
    with pytest.raises(ProtocolError, match="no 'user'"):
        JobInfo.from_dict({k: v for k, v in JOB.to_dict().items() if k != "user"})
    with pytest.raises(ProtocolError, match="unknown state 'done'"):
        JobInfo.from_dict({**JOB.to_dict(), "state": "done"})
    with pytest.raises(ProtocolError, match="not a map"):
        JobInfo.from_dict([JOB.to_dict()])
