"""Flow `daily-rank`: a day's new arrivals -> profiles from Feast -> ONNX scores -> DuckDB `rankings`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from atnn import drops, pipeline
from flows.common import RETRY, as_dict, feast_reader, settings_for


def resolve_date(value: str | None, timezone: str = "UTC") -> date:
    """The date parameter, or the flow run's scheduled day in `timezone` when it is not given."""
    if value:
        return date.fromisoformat(str(value)[:10])
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    when = pd.Timestamp(scheduled) if scheduled is not None else pd.Timestamp.now(tz="UTC")
    if when.tzinfo is None:
        when = when.tz_localize("UTC")
    return when.tz_convert(timezone).date()


@task(cache_policy=NO_CACHE, **RETRY)
def rank(settings, spec, ds: date, arrivals: pd.DataFrame | None = None) -> pipeline.RankReport:
    return pipeline.rank_day(settings, spec, ds, feast_reader(settings, spec), arrivals=arrivals)


@flow(name="daily-rank", log_prints=True)
def daily_rank(
    date: str | None = None,
    dataset: str = "ml-100k",
    timezone: str = "UTC",
    profile: str | None = None,
    home: str | None = None,
    drop: str | None = None,
) -> dict:
    """Rank the new arrivals of `date` (default: the scheduled day) with the champion model.

    `drop`: rank exactly the new items of this ingested drop folder, on its day; or, for a folder of
    drops, of its sub-folder named `date` (default: the scheduled day).
    """
    logger = get_run_logger()
    settings, spec = settings_for(dataset, profile, home)
    arrivals = None
    if drop:
        wanted = resolve_date(date, timezone) if date or not drops.is_drop_folder(Path(drop)) else None
        record, arrivals = drops.drop_to_rank(settings.paths.db, Path(drop), wanted)
        ds = record.ds
    else:
        ds = resolve_date(date, timezone)
    report = rank(settings, spec, ds, arrivals)
    logger.info(
        "%s: %d new arrivals, %d ranked, %d skipped, model %s",
        report.ds, report.new_arrivals, report.ranked, report.skipped, report.model_version,
    )
    create_table_artifact(key="daily-rank-top", table=report.top, description=f"top new arrivals of {report.ds}")
    create_markdown_artifact(
        key="daily-rank-summary",
        markdown=(
            f"# New arrivals of {report.ds}\n\n- new arrivals: {report.new_arrivals}\n- ranked: {report.ranked}\n"
            f"- skipped: {report.skipped} {report.skipped_reasons or ''}\n- model version: {report.model_version}\n"
        ),
    )
    return as_dict(report)
