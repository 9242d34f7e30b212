"""Store settings that reach DuckDB."""

from __future__ import annotations

from pathlib import Path

from testfleet.store import Store


def test_threads_setting_reaches_duckdb(tmp_path: Path) -> None:
    with Store(tmp_path / "one.duckdb", threads=1) as store:
        row = store._read(
            "threads", lambda c: c.execute("SELECT current_setting('threads')").fetchone()
        )
        assert row is not None
        assert row[0] == 1
