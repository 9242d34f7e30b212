"""Both stores (DuckDB and PostgreSQL) keep the contract the coordinator is written against.

mypy checks it where the app factory assigns the store to a
``CoordinatorStore`` (and the typed assignments below, where mypy covers the
tests). The runtime check compares every method and property of the contract
with the store's, parameter by parameter (names, kinds, defaults), so a method
renamed or a parameter dropped on either side fails here, not in production.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import pytest
from store_builders import task

from testfleet.domain.records import NewRows, WriteBatch
from testfleet.store import Store
from testfleet.store.contract import (
    AlertStore,
    CoordinatorStore,
    PreparedWrite,
    SecurityStore,
    StoreReader,
    StoreWriter,
)
from testfleet.store.postgres import PostgresStore
from testfleet.store.postgres.store import PreparedPgBatch
from testfleet.store.store import PreparedBatch

CONTRACTS: list[type] = [CoordinatorStore, StoreReader, StoreWriter, SecurityStore, AlertStore]


def contract_members(contract: type) -> dict[str, object]:
    """The methods and properties a Protocol declares, its bases' included."""
    members: dict[str, object] = {}
    for klass in reversed(contract.__mro__):
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and (callable(value) or isinstance(value, property)):
                members[name] = value
    return members


def parameters(function: object) -> list[tuple[str, object, object]]:
    """Each parameter's name, kind and default (mypy compares the types)."""
    assert callable(function)
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_the_duckdb_store_satisfies_the_contract_by_type() -> None:
    with Store(":memory:") as store:
        everything: CoordinatorStore = store
        reader: StoreReader = store
        writer: StoreWriter = store
        prepared: PreparedWrite = store.prepare(WriteBatch())
        assert everything is reader is writer
        assert isinstance(prepared, PreparedBatch)


def test_the_postgres_store_satisfies_the_contract_by_type(pg_dsn: str) -> None:
    with PostgresStore(pg_dsn) as store:
        everything: CoordinatorStore = store
        writer: StoreWriter = store
        prepared: PreparedWrite = store.prepare(WriteBatch())
        assert everything is writer
        assert isinstance(prepared, PreparedPgBatch)


@pytest.mark.parametrize("implementation", [Store, PostgresStore], ids=lambda c: c.__name__)
@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.__name__)
def test_every_method_of_the_contract_has_the_same_signature_on_the_store(
    contract: type, implementation: type
) -> None:
    members = contract_members(contract)
    assert members, contract
    for name, declared in members.items():
        implemented = inspect.getattr_static(implementation, name, None)
        assert implemented is not None, (
            f"{implementation.__name__} lacks {contract.__name__}.{name}"
        )
        if isinstance(declared, property):
            assert isinstance(implemented, property), name
            continue
        assert callable(implemented), name
        assert parameters(implemented) == parameters(declared), name


def test_a_prepared_batch_commits_itself_through_the_contract(any_store: Store) -> None:
    with any_store as store:
        prepared = store.prepare(WriteBatch(tasks=[task("t1")], new_rows=NewRows({"t1"})))
        assert store.get_task("t1") is None  # prepared is not written
        prepared.commit()
        assert store.get_task("t1") is not None
