"""Encryption at rest: the coordinator's DuckDB file under a key (AES-GCM).

Callers: ``testfleet coordinator --db-key-file F`` (or ``TESTFLEET_DB_KEY``)
reads a :class:`DatabaseKey` with :func:`read_key_file` or :func:`key_from_env`
and hands it to :class:`testfleet.store.Store`, which opens the file through
:func:`attach_encrypted`.

How DuckDB does it (1.4 and later): a database is encrypted when it is
``ATTACH``-ed with ``ENCRYPTION_KEY``; its blocks, its WAL and (with
``temp_file_encryption``) its temporary files are AES-GCM encrypted, only the
main header stays plain. DuckDB's built-in crypto (mbedtls) is read-only: it
writes encrypted files only with OpenSSL, which comes with its ``httpfs``
extension, unless one sets ``force_mbedtls_unsafe`` — which this module never
does. The extension is installed offline as the ``duckdb-extension-httpfs``
wheel, built for one DuckDB version (the project pins both to the same one);
it is loaded from the file in that wheel, never downloaded. Without it a
coordinator with a key refuses to start rather than write weakly.

The database is attached as :data:`CATALOG` beside DuckDB's in-memory default
one; a fresh cursor starts in the default, so the store runs ``USE`` on each
(:func:`use_catalog`).
"""

from __future__ import annotations

import importlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from testfleet.store.errors import StoreError

#: The environment variable that may hold the key itself (instead of a key file).
KEY_ENV = "TESTFLEET_DB_KEY"
#: The environment variable that may name the key file (``--db-key-file``'s default).
KEY_FILE_ENV = "TESTFLEET_DB_KEY_FILE"
#: A key shorter than this is refused: it would be guessable.
MIN_KEY_CHARS = 16
#: The name the encrypted database is attached under.
CATALOG = "fleet"
#: What a person runs to make a key file.
MAKE_KEY = "umask 077; openssl rand -base64 32 > KEYFILE"
HTTPFS_WHEEL = "duckdb-extension-httpfs"


@dataclass(frozen=True, slots=True)
class DatabaseKey:
    """A database key and where it came from (``source`` names it in errors).

    The secret never shows in ``repr`` or in a message.
    """

    secret: str = field(repr=False)
    source: str


class KeyFileError(StoreError):
    """A key file or key variable that cannot be used; the message names it and the fix."""


def read_key_file(path: Path) -> DatabaseKey:
    """The key in ``path`` (its first line, surrounding whitespace dropped).

    Refused, with the fix in the message: a file missing, unreadable, a
    directory, readable by group or others (``chmod 600``), empty or short.
    """
    where = f"the database key file {str(path)!r}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(
            f"{where} does not exist; create one with `{MAKE_KEY.replace('KEYFILE', str(path))}`"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {where}: {exc.strerror}; check its path") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{where} is not a regular file; give the file that holds the key")
    if info.st_mode & 0o077:
        raise KeyFileError(
            f"{where} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(
            f"cannot read {where}: {exc.strerror}; make it readable by this user"
        ) from None
    except UnicodeDecodeError:
        raise KeyFileError(
            f"{where} is not text; write the key as text, e.g. `{MAKE_KEY}`"
        ) from None
    lines = text.strip().splitlines()
    return _checked(lines[0].strip() if lines else "", where)


def key_from_env(environ: dict[str, str] | None = None) -> DatabaseKey | None:
    """The key in ``TESTFLEET_DB_KEY``, or ``None`` when it is not set.

    The variable is removed from the process's environment once read (when
    ``environ`` is ``os.environ``, the default), so nothing this process
    starts inherits the key.
    """
    env = os.environ if environ is None else environ
    value = env.pop(KEY_ENV, None)
    if value is None:
        return None
    return _checked(value.strip(), f"the key in {KEY_ENV}")


def _checked(secret: str, where: str) -> DatabaseKey:
    if not secret:
        raise KeyFileError(f"{where} is empty; put a key in it, e.g. `{MAKE_KEY}`")
    if len(secret) < MIN_KEY_CHARS:
        raise KeyFileError(
            f"{where} is too short ({len(secret)} characters, at least {MIN_KEY_CHARS}); "
            f"make a random one, e.g. `{MAKE_KEY}`"
        )
    if not secret.isprintable():
        raise KeyFileError(f"{where} holds control characters; use a key of printable text")
    return DatabaseKey(secret, where)


def wheel_extension_path(package: str, name: str) -> Path | None:
    """The file of DuckDB extension ``name`` in the installed wheel ``package``
    (``duckdb_extension_<name>``) for this DuckDB version, or ``None`` when it is
    not installed. Both extension wheels (httpfs here, postgres for the
    PostgreSQL store) lay their files out the same way."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    folder = Path(str(module.__file__)).parent / "extensions" / f"v{duckdb.__version__}"
    candidate = folder / f"{name}.duckdb_extension"
    return candidate if candidate.is_file() else None


def crypto_extension_path() -> Path | None:
    """The httpfs extension file of the installed ``duckdb-extension-httpfs`` wheel
    for this DuckDB version, or ``None`` when it is not installed."""
    return wheel_extension_path("duckdb_extension_httpfs", "httpfs")


def attach_encrypted(connection: duckdb.DuckDBPyConnection, path: str, key: DatabaseKey) -> None:
    """Load OpenSSL (httpfs), attach ``path`` under ``key`` as :data:`CATALOG` and use it.

    ``connection`` is a fresh in-memory one that still allows external access
    (loading the extension reads its file); the caller switches that off
    afterwards. Raises :class:`StoreError` with a one-line reason and fix.
    """
    extension = crypto_extension_path()
    if extension is None:
        raise StoreError(
            f"cannot open {path!r} encrypted: DuckDB writes encrypted files safely only with "
            f"OpenSSL from its httpfs extension, which is not installed for DuckDB "
            f"{duckdb.__version__}; install it with `pip install "
            f"{HTTPFS_WHEEL}=={duckdb.__version__}` (the coordinator will not write weakly)"
        )
    try:
        connection.execute(f"LOAD '{_quoted(str(extension))}'")
    except duckdb.Error as error:
        raise StoreError(
            f"cannot load DuckDB's httpfs extension from {str(extension)!r} ({error}); "
            f"reinstall it with `pip install --force-reinstall {HTTPFS_WHEEL}=="
            f"{duckdb.__version__}`"
        ) from error
    try:
        connection.execute(
            f"ATTACH '{_quoted(path)}' AS {CATALOG} "
            f"(ENCRYPTION_KEY '{_quoted(key.secret)}', ENCRYPTION_CIPHER 'GCM')"
        )
    except duckdb.Error as error:
        raise describe_encrypted_open_error(path, key, error) from error
    # Spilled intermediates (large sorts, joins) are encrypted too, under a
    # random per-process key.
    connection.execute("SET temp_file_encryption = true")
    connection.execute(f"USE {CATALOG}")


def use_catalog(cursor: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Point a fresh cursor of an encrypted store at :data:`CATALOG`; returns it."""
    cursor.execute(f"USE {CATALOG}")
    return cursor


def describe_encrypted_open_error(path: str, key: DatabaseKey, error: duckdb.Error) -> StoreError:
    """One line for an encrypted open that failed: a wrong key, a plain file, or other."""
    message = str(error)
    lowered = message.lower()
    if "wrong encryption key" in lowered:
        return StoreError(
            f"cannot open the database file {path!r}: {key.source} does not decrypt it "
            "(a wrong key); give the key it was created with"
        )
    if "is not encrypted" in lowered:
        return StoreError(
            f"cannot open the database file {path!r} with {key.source}: the file is not "
            "encrypted; start without a key (--db-key-file, TESTFLEET_DB_KEY), or give a "
            "new --db to start an encrypted database"
        )
    return StoreError(f"cannot open the encrypted database file {path!r}: {message}")


def describe_plain_open_error(path: str, error: duckdb.Error) -> StoreError | None:
    """The one line for opening an encrypted file without a key, or ``None`` for
    any other error (the caller describes those)."""
    if "without a key" in str(error).lower():
        return StoreError(
            f"cannot open the database file {path!r}: it is encrypted; give its key with "
            f"--db-key-file FILE or the {KEY_ENV} environment variable"
        )
    return None


def _quoted(text: str) -> str:
    """``text`` inside a SQL string literal."""
    return text.replace("'", "''")
