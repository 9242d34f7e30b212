"""Which codec a worker is welcomed with depends on what its channel carries (issue 16):
Protocol Buffers over gRPC, never over a WebSocket, whose frames are text or bytes.

An in-process fleet on a fake clock (no sockets): the coordinator's end of a
worker's channel either carries the WebSocket's codecs (the default) or every
codec (``carries``, as the gRPC channel does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testfleet.domain.enums import Codec, TaskStatus
from testfleet.domain.task import TaskSpec
from testfleet.protocol.codec import ProtobufFrame
from testfleet.testing.fleet import in_process_fleet


def simulated(task_id: str) -> TaskSpec:
    return TaskSpec.model_validate(
        {"task_id": task_id, "type": "simulated", "config": {"duration_seconds": 1.0}}
    )


@pytest.mark.parametrize(
    ("asked", "carries", "welcomed"),
    [
        pytest.param(Codec.PROTOBUF, tuple(Codec), Codec.PROTOBUF, id="protobuf-over-grpc"),
        pytest.param(Codec.PROTOBUF, None, Codec.JSON, id="protobuf-over-websocket"),
        pytest.param(Codec.MSGPACK, tuple(Codec), Codec.MSGPACK, id="msgpack-over-grpc"),
        pytest.param(Codec.MSGPACK, None, Codec.MSGPACK, id="msgpack-over-websocket"),
    ],
)
async def test_a_worker_runs_its_tasks_in_the_codec_its_channel_carries(
    tmp_path: Path, asked: Codec, carries: tuple[Codec, ...] | None, welcomed: Codec
) -> None:
    async with in_process_fleet(tmp_path / "codecs.duckdb") as fleet:
        worker = fleet.add_worker("w1", slots=2, codec=asked, carries=carries)
        await fleet.wait_until(worker.agent.connected.is_set)
        ids = ["t1", "t2", "t3"]
        await fleet.loop.submit([simulated(task_id) for task_id in ids])
        await fleet.wait_until(
            lambda: all(
                (record := fleet.store.get_task(task_id)) is not None
                and record.status is TaskStatus.COMPLETED
                for task_id in ids
            )
        )
        (link,) = worker.connector.links
        sent = link.worker.sent
    protobuf_frames = [frame for frame in sent if isinstance(frame, ProtobufFrame)]
    if welcomed is Codec.PROTOBUF:
        # After the JSON hello, everything the worker said was an envelope.
        assert isinstance(sent[0], str)
        assert len(protobuf_frames) == len(sent) - 1
    else:
        assert protobuf_frames == []
        if welcomed is Codec.MSGPACK:
            assert any(isinstance(frame, bytes) for frame in sent[1:])
