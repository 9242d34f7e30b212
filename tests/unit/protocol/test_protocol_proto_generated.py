"""The checked-in code generated from ``worker_channel.proto`` is what the .proto makes now.

The generated modules are checked in (a wheel needs no compiler), so an edit
of the .proto without ``make protos`` would leave code that disagrees with the
file people read. This runs the same script into a scratch folder and
compares byte for byte; the fix on a failure is ``make protos``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "src" / "testfleet" / "protocol" / "proto"
NAMES = ["worker_channel_pb2.py", "worker_channel_pb2.pyi", "worker_channel_pb2_grpc.py"]


def test_the_generated_code_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="needs grpcio-tools (the dev extra)")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = tmp_path / "testfleet" / "protocol" / "proto"
    assert sorted(p.name for p in fresh.iterdir()) == sorted(NAMES)
    stale = [
        name for name in NAMES if (fresh / name).read_bytes() != (GENERATED / name).read_bytes()
    ]
    assert stale == [], f"stale generated code {stale}: run `make protos` and commit the result"


def test_the_generated_modules_load_against_the_installed_runtimes() -> None:
    # The gencode checks the protobuf runtime (same major, not older) and the
    # gRPC module checks grpcio on import; a dependency range in pyproject.toml
    # that let an incompatible runtime in would fail here first.
    from testfleet.protocol.proto import worker_channel_pb2, worker_channel_pb2_grpc

    service = worker_channel_pb2.DESCRIPTOR.services_by_name["WorkerChannel"]
    connect = service.methods_by_name["Connect"]
    assert connect.client_streaming
    assert connect.server_streaming
    assert connect.input_type.name == connect.output_type.name == "Frame"
    assert hasattr(worker_channel_pb2_grpc, "add_WorkerChannelServicer_to_server")
