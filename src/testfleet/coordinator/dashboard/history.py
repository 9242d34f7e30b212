"""The overview charts' history: finished tasks per minute over the last hour.

Callers: the ``/dashboard/history`` route (:mod:`.routes`), which a page's
charts load before they append the event stream's points, and
:mod:`.live` (:func:`chart_point`, the same shape for one live point). Read
with the store's read-only query (:meth:`StoreReader.query`), one ``GROUP BY``
over ``distributed_tasks``; the only value put into the SQL is a number this
module formats, never text from a request.
"""

from __future__ import annotations

from testfleet.store.contract import StoreReader

#: How far back the charts start.
HISTORY_SECONDS = 3600.0
BUCKET_SECONDS = 60


def chart_point(
    t: float, span: float, finished: int, completed: int
) -> dict[str, float | None] | None:
    """One point: throughput in tasks per minute over ``span`` seconds ending at
    ``t``, and the pass rate in percent (None when nothing finished)."""
    if span <= 0:
        return None
    return {
        "t": round(t, 3),
        "throughput": round(finished * 60.0 / span, 3),
        "pass_rate": None if finished <= 0 else round(100.0 * completed / finished, 2),
    }


def history_sql(now: float) -> str:
    since_us = int((now - HISTORY_SECONDS) * 1_000_000)
    return (
        "SELECT epoch(time_bucket(INTERVAL '1 minute', end_time)) AS t, "
        "count(*) AS finished, count(*) FILTER (WHERE status = 'completed') AS completed "
        "FROM distributed_tasks "
        f"WHERE end_time IS NOT NULL AND end_time >= make_timestamp({since_us}) "
        "GROUP BY 1 ORDER BY 1"
    )


def chart_history(store: StoreReader, now: float) -> list[dict[str, float | None]]:
    """Points per minute over the last hour (minutes with nothing finished left
    out), each as :func:`chart_point` makes them; runs in a thread."""
    result = store.query(history_sql(now), max_rows=int(HISTORY_SECONDS // BUCKET_SECONDS) + 2)
    points = []
    for t, finished, completed in result.rows:
        # A bucket's point sits at its end, as a live point sits at its sample.
        end = min(float(t) + BUCKET_SECONDS, now)
        point = chart_point(end, BUCKET_SECONDS, int(finished), int(completed))
        if point is not None:
            points.append(point)
    return points
