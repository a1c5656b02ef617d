"""Flow `daily-rank`: a day's new arrivals -> profiles from Feast -> ONNX scores -> DuckDB `rankings`."""

from __future__ import annotations

import dataclasses
import time
from datetime import date
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from atnn import drops, pipeline, registry, scale, scoring
from flows import scale_out
from flows.common import RETRY, as_dict, ranking_reader, settings_for
from flows.reporting import publish_rank_artifacts


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
def rank(settings, spec, ds: date, arrivals: pd.DataFrame | None = None, neighbours: bool = True) -> pipeline.RankReport:
    return pipeline.rank_day(settings, spec, ds, ranking_reader(settings, spec), arrivals=arrivals, neighbours=neighbours)


def rank_partitioned(settings, spec, ds: date, arrivals: pd.DataFrame | None, neighbours: bool) -> pipeline.RankReport:
    """Scale-out: the day's arrivals in `settings.scale.partitions` parts, scored on the configured
    task runner (flows/scale_out.py), then ranked and written once, as `rank` does."""
    started = time.perf_counter()
    model_dir = registry.champion_dir(settings.paths.db, spec)
    scorer = scale.cached_scorer(str(model_dir))
    scorer.check_compatible(spec)
    if arrivals is None:
        arrivals = scoring.new_arrivals(settings.paths.db, ds)
    parts = scale.partition_arrivals(arrivals, settings.scale.partitions)
    results = scale_out.run_partitioned(settings, spec, str(model_dir), parts, pipeline.ranking_time(ds, arrivals),
                                        scorer.needs_vectors(neighbours))
    scored, skipped, stages = scale.concat_partitions(results)
    stages["partitioned_s"] = time.perf_counter() - started
    return pipeline.finish_ranking(settings, spec, ds, scorer, arrivals, scored, skipped, started=started, stages=stages, neighbours=neighbours)


@flow(name="daily-rank", log_prints=True)
def daily_rank(
    date: str | None = None,
    dataset: str = "ml-100k",
    timezone: str = "UTC",
    profile: str | None = None,
    home: str | None = None,
    drop: str | None = None,
    partitions: int | None = None,
    task_runner: str | None = None,
    dask_address: str | None = None,
    neighbours: bool = True,
) -> dict:
    """Rank the new arrivals of `date` (default: the scheduled day) with the champion model.

    `drop`: rank exactly the new items of this ingested drop folder, on its day; or, for a folder of
    drops, of its sub-folder named `date` (default: the scheduled day).
    `partitions`, `task_runner` ("threads" or "dask"), `dask_address`: scale-out (atnn.config.ScaleConfig);
    `neighbours`: also write `similar_items`.
    """
    logger = get_run_logger()
    settings, spec = settings_for(dataset, profile, home)
    overrides = {"partitions": partitions, "task_runner": task_runner, "dask_address": dask_address}
    settings = dataclasses.replace(settings, scale=dataclasses.replace(settings.scale, **{k: v for k, v in overrides.items() if v is not None}))
    arrivals = None
    if drop:
        wanted = resolve_date(date, timezone) if date or not drops.is_drop_folder(Path(drop)) else None
        record, arrivals = drops.drop_to_rank(settings.paths.db, Path(drop), wanted)
        ds = record.ds
    else:
        ds = resolve_date(date, timezone)
    if settings.scale.partitions > 1:
        report = rank_partitioned(settings, spec, ds, arrivals, neighbours)
    else:
        report = rank(settings, spec, ds, arrivals, neighbours)
    logger.info(
        "%s: %d new arrivals, %d ranked, %d skipped, model %s",
        report.ds, report.new_arrivals, report.ranked, report.skipped, report.model_version,
    )
    publish_rank_artifacts(settings.paths.db, report)  # top 20 table + markdown summary
    return as_dict(report)
