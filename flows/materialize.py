"""Flow `materialize`: load recent feature values into the Feast online store, before the day is ranked."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from atnn import store
from flows.common import RETRY, settings_for
from flows.daily_rank import resolve_date


@task(cache_policy=NO_CACHE, **RETRY)
def materialize_window(settings, spec, start: datetime, end: datetime) -> None:
    store.materialize(settings, spec, start, end)


@flow(name="materialize", log_prints=True)
def materialize(
    date: str | None = None,
    dataset: str = "ml-100k",
    timezone: str = "UTC",
    lookback_days: int = 60,
    profile: str | None = None,
    home: str | None = None,
) -> dict:
    """Materialize feature values stamped in the `lookback_days` before the end of `date` (default: the scheduled day).

    The look-back covers the statistics windows that can close on that day.
    """
    settings, spec = settings_for(dataset, profile, home)
    ds = resolve_date(date, timezone)
    end = datetime.combine(ds, time.min) + timedelta(days=1)
    start = end - timedelta(days=lookback_days)
    materialize_window(settings, spec, start, end)
    get_run_logger().info("materialized the online store for %s .. %s", start, end)
    return {"ds": ds.isoformat(), "start": start.isoformat(), "end": end.isoformat()}
