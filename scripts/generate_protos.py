"""Generate the worker channel's Python code from its ``.proto`` (``make protos``).

Run after editing ``src/testfleet/protocol/proto/worker_channel.proto``; the
generated ``worker_channel_pb2.py``, ``.pyi`` and ``_pb2_grpc.py`` are checked
in next to it, so a coordinator or worker installed from a wheel needs no
compiler. ``tests/unit/protocol/test_protocol_proto_generated.py`` runs this
script into a scratch folder and fails while the checked-in files differ, so
an edited ``.proto`` cannot be merged without them.

The compiler is grpcio-tools' bundled protoc (``python -m grpc_tools.protoc``,
the dev extra pins its version): another protoc would write other bytes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOT = ROOT / "src"
#: Relative to ``src/``: protoc names the generated module after this path
#: (``testfleet.protocol.proto.worker_channel_pb2``), so it is always given so.
PROTO = Path("testfleet/protocol/proto/worker_channel.proto")


def generate(out: Path) -> list[Path]:
    """Write the generated files under ``out`` (mirroring ``src/``); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={SOURCE_ROOT}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO),
        ],
        check=True,
        cwd=SOURCE_ROOT,
    )
    stem = PROTO.with_suffix("")
    return [
        out / stem.with_name(f"{stem.name}{suffix}")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=SOURCE_ROOT,
        help="folder to write into, mirroring src/ (default: src/, in place)",
    )
    for path in generate(parser.parse_args().out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
