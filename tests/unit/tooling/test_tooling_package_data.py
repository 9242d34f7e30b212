"""A wheel and an sdist of testfleet carry the files ``/docs`` and ``/dashboard`` serve
(and the worker channel's .proto with its generated code).

``/docs`` loads Swagger UI from ``testfleet/coordinator/swagger_ui`` (so that
it works offline); a build that left that folder out would start a
coordinator whose documentation page cannot load. The test builds both from a
copy of the project with setuptools (the build backend pyproject.toml names),
without build isolation: nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from testfleet.coordinator.dashboard import STATIC_DIR as DASHBOARD_STATIC
from testfleet.coordinator.dashboard.templates import TEMPLATES_DIR as DASHBOARD_TEMPLATES
from testfleet.coordinator.docs_page import ASSETS_DIR

ROOT = Path(__file__).resolve().parents[3]

BUILD = """
import sys
from setuptools import build_meta
out = sys.argv[1]
build_meta.build_wheel(out)
build_meta.build_sdist(out)
"""


def test_wheel_and_sdist_ship_the_docs_assets(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(
        ROOT / "src",
        project / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    out = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(out)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel_path,) = out.glob("*.whl")
    (sdist_path,) = out.glob("*.tar.gz")
    # What /docs references, and the licence that must travel with it.
    needed = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE", "NOTICE"}
    assert needed <= {p.name for p in ASSETS_DIR.iterdir()}

    with zipfile.ZipFile(wheel_path) as wheel:
        in_wheel = set(wheel.namelist())
    with tarfile.open(sdist_path) as sdist:
        in_sdist = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in needed:
        assert f"testfleet/coordinator/swagger_ui/{name}" in in_wheel, sorted(in_wheel)
        assert f"src/testfleet/coordinator/swagger_ui/{name}" in in_sdist, sorted(in_sdist)
    # The dashboard's templates and vendored scripts (with their licences), likewise.
    for folder in (DASHBOARD_STATIC, DASHBOARD_TEMPLATES):
        relative = folder.relative_to(ROOT / "src")
        for path in folder.iterdir():
            assert f"{relative}/{path.name}" in in_wheel, sorted(in_wheel)
            assert f"src/{relative}/{path.name}" in in_sdist, sorted(in_sdist)
    # The worker channel's .proto (for peers in other languages) and its
    # generated code with the type stub (make protos; a wheel needs no compiler).
    for name in (
        "worker_channel.proto",
        "worker_channel_pb2.py",
        "worker_channel_pb2.pyi",
        "worker_channel_pb2_grpc.py",
    ):
        assert f"testfleet/protocol/proto/{name}" in in_wheel, sorted(in_wheel)
        assert f"src/testfleet/protocol/proto/{name}" in in_sdist, sorted(in_sdist)
