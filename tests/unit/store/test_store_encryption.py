"""Encryption at rest: an encrypted store's file and WAL hide what it holds, and every
wrong way to open it (or to give its key) is one clear line.

The plain-store control in the first test proves the byte search can find a
task id at all, so the encrypted case cannot pass by searching the wrong file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_builders import task

from testfleet.domain.records import WriteBatch
from testfleet.store import Store, StoreError, encryption
from testfleet.store.encryption import DatabaseKey, KeyFileError, key_from_env, read_key_file

KEY = DatabaseKey("an-example-key-0123456789abcdef", "the key file test.key")
OTHER_KEY = DatabaseKey("another-key-0123456789abcdefgh", "the key file other.key")
#: Distinctive enough that it cannot turn up by chance in encrypted bytes.
TASK_IDS = [f"secret-task-id-{n:04d}-7f3a9c" for n in range(50)]


def _write_tasks(store: Store) -> None:
    store.write(WriteBatch(tasks=[task(task_id) for task_id in TASK_IDS]))


def _raw_files(db: Path) -> dict[str, bytes]:
    """The database file and its WAL as they lie on disk now (the WAL only while open)."""
    files = {db.name: db.read_bytes()}
    wal = db.with_name(db.name + ".wal")
    if wal.exists():
        files[wal.name] = wal.read_bytes()
    return files


def _leaks(files: dict[str, bytes]) -> list[str]:
    return [name for name, data in files.items() if TASK_IDS[0].encode() in data]


@pytest.mark.parametrize("key", [None, KEY], ids=["plain-control", "encrypted"])
def test_the_file_and_its_wal_hold_no_task_id_only_when_encrypted(
    tmp_path: Path, key: DatabaseKey | None
) -> None:
    db = tmp_path / "fleet.duckdb"
    store = Store(db, encryption_key=key)
    _write_tasks(store)
    while_open = _raw_files(db)
    assert db.name + ".wal" in while_open, "the WAL should hold the uncheckpointed batch"
    store.close()
    after_close = _raw_files(db)
    leaks = _leaks(while_open) + _leaks(after_close)
    if key is None:
        assert leaks, "the control must find the plain task id (else the search is wrong)"
    else:
        assert leaks == []


def test_with_the_key_everything_reads_back(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    with Store(db, encryption_key=KEY) as store:
        _write_tasks(store)
    with Store(db, encryption_key=KEY) as store:
        assert store.all_task_ids() == set(TASK_IDS)
        assert store.query("SELECT count(*) FROM distributed_tasks").rows == [[len(TASK_IDS)]]


def test_users_queries_cannot_reach_other_files_in_an_encrypted_store(tmp_path: Path) -> None:
    with Store(tmp_path / "fleet.duckdb", encryption_key=KEY) as store:
        result = store.query("SELECT current_setting('enable_external_access') AS on")
        assert result.rows == [[False]]
        assert store.query("SELECT current_setting('temp_file_encryption') AS on").rows == [[True]]
        assert store.query("SELECT current_setting('force_mbedtls_unsafe') AS unsafe").rows == [
            [False]
        ]


def test_no_key_for_an_encrypted_file_names_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    Store(db, encryption_key=KEY).close()
    with pytest.raises(StoreError) as caught:
        Store(db)
    message = str(caught.value)
    assert "encrypted" in message
    assert "--db-key-file" in message
    assert str(db) in message
    assert "\n" not in message


def test_a_wrong_key_says_so(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    Store(db, encryption_key=KEY).close()
    with pytest.raises(StoreError, match=r"other\.key does not decrypt it"):
        Store(db, encryption_key=OTHER_KEY)


def test_a_key_for_a_plain_file_says_so(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    Store(db).close()
    with pytest.raises(StoreError, match="the file is not encrypted"):
        Store(db, encryption_key=KEY)


def test_without_the_httpfs_extension_a_key_is_refused_not_written_weakly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encryption, "crypto_extension_path", lambda: None)
    db = tmp_path / "fleet.duckdb"
    with pytest.raises(StoreError, match="pip install duckdb-extension-httpfs=="):
        Store(db, encryption_key=KEY)
    assert not db.exists()


# -- the key file ----------------------------------------------------------------


def _key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "db.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_key_file_reads_its_first_line(tmp_path: Path) -> None:
    key = read_key_file(_key_file(tmp_path, KEY.secret + "\n"))
    assert key.secret == KEY.secret
    assert str(tmp_path / "db.key") in key.source
    assert KEY.secret not in repr(key)


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("", 0o600, "is empty"),
        ("short", 0o600, "too short"),
        (KEY.secret, 0o640, "chmod 600"),
        (KEY.secret, 0o604, "chmod 600"),
    ],
    ids=["empty", "short", "group-readable", "world-readable"],
)
def test_a_bad_key_file_is_one_line_naming_it_and_the_fix(
    tmp_path: Path, text: str, mode: int, expected: str
) -> None:
    path = _key_file(tmp_path, text, mode)
    with pytest.raises(KeyFileError) as caught:
        read_key_file(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"does not exist; create one with .*openssl rand"):
        read_key_file(tmp_path / "nowhere.key")


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_key_file(tmp_path)


def test_the_key_variable_is_read_once_and_removed() -> None:
    environ = {encryption.KEY_ENV: KEY.secret + "\n"}
    key = key_from_env(environ)
    assert key is not None
    assert key.secret == KEY.secret
    assert encryption.KEY_ENV not in environ
    assert key_from_env(environ) is None
    with pytest.raises(KeyFileError, match="TESTFLEET_DB_KEY is too short"):
        key_from_env({encryption.KEY_ENV: "abc"})
