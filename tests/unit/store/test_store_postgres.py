"""What only the PostgreSQL store does: open_store's choice, connection errors
without the password, fencing by the lease epoch, migrations under concurrency
and from the future, a read side that cannot write, and a writer that survives
a server restart. (The behaviour both stores share runs on both through the
``any_store`` fixture in the other store tests.)"""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from pg_cluster import PW_PASSWORD, PW_USER, PgCluster, free_port
from store_builders import T0, task, worker
from typer.testing import CliRunner

from testfleet.cli.app import app
from testfleet.domain.records import WriteBatch
from testfleet.security.tokens import TOKEN_PREFIX, Role, hash_secret, issue_token
from testfleet.store import Store, StoreError, StoreFenced, open_store
from testfleet.store.live_query import QueryError
from testfleet.store.postgres import PostgresStore
from testfleet.store.postgres.schema import LATEST_VERSION


def set_epoch(dsn: str, epoch: int) -> None:
    """What a takeover does to the lease row (helper L's leadership code)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("UPDATE coordinator_lease SET epoch = %s WHERE id = 1", [epoch])


def column_values(dsn: str, sql: str) -> list[object]:
    with psycopg.connect(dsn) as connection:
        return [row[0] for row in connection.execute(sql).fetchall()]


# -- open_store ---------------------------------------------------------------------


def test_open_store_picks_duckdb_for_a_path_and_postgres_for_a_dsn(
    tmp_path: Path, pg_dsn: str
) -> None:
    with open_store(tmp_path / "fleet.db") as duck:
        assert isinstance(duck, Store)
    for dsn in (pg_dsn, pg_dsn.replace("postgresql://", "postgres://")):
        with open_store(dsn, epoch=0) as pg:
            assert isinstance(pg, PostgresStore)
            assert pg.epoch == 0
            assert pg.schema_version == LATEST_VERSION


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("mysql://u@h/db", "neither a DuckDB file path nor a postgresql:// URL"),
        ("postgresql://u@127.0.0.1:5432", "names no database"),
        ("postgresql://u@127.0.0.1:99999/db", "not a valid PostgreSQL URL"),
    ],
)
def test_a_store_spec_that_is_not_usable_says_how_to_write_one(spec: str, words: str) -> None:
    with pytest.raises(StoreError, match=words):
        open_store(spec)


def test_duckdb_only_options_with_a_dsn_say_what_postgresql_uses(
    pg_dsn: str, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="pg_dump"):
        open_store(pg_dsn, snapshot_dir=tmp_path)
    with pytest.raises(StoreError, match="lease epoch applies to a PostgreSQL store only"):
        open_store(tmp_path / "x.db", epoch=3)


# -- connection errors, password masked ------------------------------------------------


def test_wrong_credentials_are_named_and_the_password_never_shown(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.dsn("postgres", user=PW_USER, password="s3cret-wrong")
    with pytest.raises(StoreError) as raised:
        PostgresStore(dsn)
    message = str(raised.value)
    assert "wrong user name or password" in message
    assert "s3cret-wrong" not in message
    assert f"postgresql://{PW_USER}:***@" in message


def test_the_right_password_opens_the_store(pg_cluster: PgCluster) -> None:
    name = pg_cluster.new_database()
    with pg_cluster.connect(name) as connection:
        connection.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {PW_USER}")
        connection.execute(f"GRANT ALL ON SCHEMA public TO {PW_USER}")
    dsn = pg_cluster.dsn(name, user=PW_USER, password=PW_PASSWORD)
    with PostgresStore(dsn) as store:
        assert store.path.endswith(f"/{name}")
        assert PW_PASSWORD not in store.path
        assert store.status_counts()
    pg_cluster.drop_database(name)


def test_a_refused_port_says_nothing_listens_there() -> None:
    dsn = f"postgresql://testfleet:pw-not-shown@127.0.0.1:{free_port()}/db"
    with pytest.raises(StoreError, match="nothing listens there") as raised:
        PostgresStore(dsn)
    assert "pw-not-shown" not in str(raised.value)


def test_a_missing_database_says_to_create_it(pg_cluster: PgCluster) -> None:
    with pytest.raises(StoreError, match="the database does not exist"):
        PostgresStore(pg_cluster.dsn("no_such_database"))


# -- fencing ----------------------------------------------------------------------------


def test_writes_carry_the_epoch_and_stop_once_another_leader_has_taken_over(
    pg_dsn: str,
) -> None:
    set_epoch(pg_dsn, 5)
    with PostgresStore(pg_dsn, epoch=5) as store:
        store.write(WriteBatch(workers=[worker("w1")], tasks=[task("t1")]))
        assert column_values(pg_dsn, "SELECT written_epoch FROM distributed_tasks") == [5]

        set_epoch(pg_dsn, 6)
        with pytest.raises(StoreFenced, match=r"leadership \(epoch 5\) has ended; epoch 6"):
            store.write(WriteBatch(tasks=[task("t2")]))
        token = issue_token("ci", Role.ADMIN, T0).record
        with pytest.raises(StoreFenced):
            store.add_token(token)

        assert [t.task_id for t in store.list_tasks()] == ["t1"]
        assert store.list_tokens() == []


def test_without_an_epoch_writes_are_not_fenced_and_carry_zero(pg_dsn: str) -> None:
    set_epoch(pg_dsn, 9)
    with PostgresStore(pg_dsn) as store:
        store.write(WriteBatch(workers=[worker("w1")], tasks=[task("t1")]))
    assert column_values(pg_dsn, "SELECT written_epoch FROM distributed_tasks") == [0]


def test_a_duckdb_file_has_written_epoch_zero() -> None:
    with Store(":memory:") as store:
        store.write(WriteBatch(workers=[worker("w1")], tasks=[task("t1")]))
        assert store.query("SELECT written_epoch FROM distributed_tasks").rows == [[0]]


# -- migrations -----------------------------------------------------------------------


def test_two_coordinators_starting_at_once_on_an_empty_database_both_open_it(
    pg_cluster: PgCluster,
) -> None:
    dsn = pg_cluster.dsn(pg_cluster.new_database(empty=True))
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresStore(dsn))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in opened:
        store.close()
    assert errors == []
    assert column_values(dsn, "SELECT version FROM schema_migrations ORDER BY version") == list(
        range(1, LATEST_VERSION + 1)
    )
    assert column_values(dsn, "SELECT epoch FROM coordinator_lease") == [0]


def test_a_database_from_a_newer_testfleet_is_refused_naming_both_versions(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as connection:
        connection.execute("INSERT INTO schema_migrations VALUES (99, localtimestamp)")
    with pytest.raises(StoreError, match=f"schema version 99.*up to {LATEST_VERSION} only"):
        PostgresStore(pg_dsn)


# -- the read side ----------------------------------------------------------------------


def test_users_queries_cannot_write_or_read_files_through_the_read_side(pg_dsn: str) -> None:
    with PostgresStore(pg_dsn) as store:
        with pytest.raises(QueryError, match="disabled by configuration"):
            store.query("SELECT * FROM read_csv('/etc/passwd')")
        shown = store.query(
            "SELECT * FROM postgres_query('fleet_pg', "
            "'SELECT current_setting(''default_transaction_read_only'')')"
        )
        assert shown.rows == [["on"]]


# -- a server restart -------------------------------------------------------------------


def test_the_writer_reconnects_after_the_server_restarted(
    pg_cluster: PgCluster, pg_dsn: str
) -> None:
    with PostgresStore(pg_dsn) as store:
        store.write(WriteBatch(workers=[worker("w1")], tasks=[task("t1")]))
        pg_cluster.restart_immediate()
        store.write(WriteBatch(tasks=[task("t2")]))
        assert [t.task_id for t in store.list_tasks()] == ["t1", "t2"]


# -- tokens create --store ------------------------------------------------------------


def test_tokens_create_writes_the_first_admin_token_into_postgresql(
    pg_dsn: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["tokens", "create", "--role", "admin", "--name", "root"]
    done = runner.invoke(app, [*base, "--store", pg_dsn])
    assert done.exit_code == 0, done.output
    (secret,) = [line for line in done.output.splitlines() if line.startswith(TOKEN_PREFIX)]
    with PostgresStore(pg_dsn) as store:
        (token,) = store.list_tokens()
        assert token.secret_hash == hash_secret(secret)
        assert [event.detail["name"] for event in store.audit_events()] == ["root"]

    both = runner.invoke(app, [*base, "--store", pg_dsn, "--db", str(tmp_path / "f.db")])
    assert both.exit_code == 2
    assert "not both" in both.output
    refused = f"postgresql://u:hidden-pw@127.0.0.1:{free_port()}/db"
    unreachable = runner.invoke(app, [*base, "--store", refused])
    assert unreachable.exit_code == 2
    assert "nothing listens there" in unreachable.output
    assert "hidden-pw" not in unreachable.output
