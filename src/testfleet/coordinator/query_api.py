"""Live queries of the coordinator's database: read-only SQL and Parquet exports.

Callers: ``testfleet sql`` and ``testfleet export`` (and any HTTP client).
While a coordinator runs it is the only process that may open its DuckDB
file, so people query it through these routes instead: ``POST /api/v1/sql``
runs one read-only ``SELECT`` within a row and time limit and answers JSON;
``GET /api/v1/export/{table}`` answers a whole table as a Parquet file. The
guards (one ``SELECT`` only, no file access, the limits) are the store's:
see :mod:`testfleet.store.live_query`. Queries run in a thread on a cursor of
their own, never on the event loop and never in the writer's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    INVALID_PARAMETER,
    INVALID_QUERY,
    MALFORMED_BODY,
    QUERY_TIMEOUT,
    STORAGE_ERROR,
    UNAUTHENTICATED,
    ApiRefusal,
    refusals,
)
from testfleet.coordinator.api_models import ResponseModel
from testfleet.coordinator.auth import Auth, require
from testfleet.security.tokens import Role
from testfleet.store.contract import StoreReader
from testfleet.store.live_query import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_ROWS_LIMIT,
    MAX_TIMEOUT_SECONDS,
    ExportTable,
    QueryError,
    QueryProblem,
)

#: A query's text; longer is a mistake (or an attack), not a query.
MAX_QUERY_CHARS = 100_000
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"

_REFUSALS: dict[QueryProblem, ApiRefusal] = {
    QueryProblem.INVALID: INVALID_QUERY,
    QueryProblem.TIMEOUT: QUERY_TIMEOUT,
}


class SqlRequest(BaseModel):
    """The body of ``POST /api/v1/sql``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)] = Field(
        description="One read-only statement: SELECT, WITH ... SELECT, FROM, SHOW, DESCRIBE, "
        "SUMMARIZE."
    )
    max_rows: int = Field(
        default=DEFAULT_MAX_ROWS,
        ge=1,
        le=MAX_ROWS_LIMIT,
        description="Rows to answer at most; `truncated` says whether there were more.",
    )
    timeout_seconds: float = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="The query is stopped after this long.",
    )


class SqlColumn(ResponseModel):
    name: str
    type: str = Field(description="DuckDB's type name, e.g. VARCHAR, TIMESTAMP, DOUBLE.")


class SqlAnswer(ResponseModel):
    """The answer of ``POST /api/v1/sql``."""

    columns: list[SqlColumn]
    rows: list[list[Any]] = Field(
        description="Times as ISO 8601 text, decimals and integers past 64 bits as text, "
        "bytes as base64, intervals in seconds, non-finite floats as null."
    )
    row_count: int
    truncated: bool
    elapsed_seconds: float


def build_query_router(store: StoreReader, auth: Auth) -> APIRouter:
    """Routes bound to one coordinator's store (built by the app factory). Admin
    only: SQL reads every table, token hashes and the audit trail included."""
    router = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(require(Role.ADMIN))],
        responses=refusals(UNAUTHENTICATED, FORBIDDEN),
    )

    @router.post(
        "/sql",
        summary="Run one read-only SQL query on the live database",
        response_model=SqlAnswer,
        responses=refusals(MALFORMED_BODY, INVALID_PARAMETER, INVALID_QUERY, QUERY_TIMEOUT),
    )
    async def run_sql(request: SqlRequest) -> Any:
        try:
            result = await asyncio.to_thread(
                store.query,
                request.query,
                max_rows=request.max_rows,
                timeout_seconds=request.timeout_seconds,
            )
        except QueryError as refused:
            return _REFUSALS[refused.problem].response(refused.message)
        return SqlAnswer(
            columns=[SqlColumn(name=c.name, type=c.type) for c in result.columns],
            rows=result.rows,
            row_count=len(result.rows),
            truncated=result.truncated,
            elapsed_seconds=round(result.elapsed_seconds, 6),
        )

    @router.get(
        "/export/{table}",
        summary="One table of the database as a Parquet file",
        response_class=FileResponse,
        responses={
            200: {
                "description": "The table as one Parquet file; the header "
                "X-Testfleet-Rows says how many rows it holds.",
                "content": {PARQUET_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            },
            **refusals(INVALID_PARAMETER, STORAGE_ERROR),
        },
    )
    async def export_table(table: ExportTable) -> Any:
        # Written to a temporary file first (a bounded amount of memory however
        # large the table), then sent and deleted.
        handle, path = tempfile.mkstemp(prefix=f"testfleet-{table.value}-", suffix=".parquet")
        try:
            with os.fdopen(handle, "wb") as sink:
                rows = await asyncio.to_thread(store.export_parquet, table, sink)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return FileResponse(
            path,
            media_type=PARQUET_MEDIA_TYPE,
            filename=f"{table.value}.parquet",
            headers={"X-Testfleet-Rows": str(rows)},
            background=BackgroundTask(os.unlink, path),
        )

    return router
