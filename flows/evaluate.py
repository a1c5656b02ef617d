"""Flow `evaluate`: rankings whose outcome window has passed vs realized popularity -> `ranking_quality`."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from atnn import evaluate as evaluate_lib
from flows.common import RETRY, as_dict, settings_for
from flows.reporting import publish_quality_artifacts


@task(cache_policy=NO_CACHE, **RETRY)
def measure(settings, spec, horizon_days: int, min_events: int, min_items: int):
    return evaluate_lib.evaluate(settings.paths.db, spec, horizon_days=horizon_days,
                                 prior_events=settings.train.prior_events, min_events=min_events, min_items=min_items)


@flow(name="evaluate", log_prints=True)
def evaluate(
    dataset: str = "ml-100k",
    profile: str | None = None,
    home: str | None = None,
    horizon_days: int = 30,
    min_events: int = 5,
    min_items: int = 5,
    chart: str | None = None,
) -> dict:
    """Write `ranking_quality` (per day with >= `min_items` items with outcomes, and per month) and its chart.

    An item has an outcome when it has >= `min_events` events in the `horizon_days` after its arrival.

    `chart`: where the PNG goes (default: <home>/quality_over_time.png).
    """
    logger = get_run_logger()
    settings, spec = settings_for(dataset, profile, home)
    report, table = measure(settings, spec, horizon_days, min_events, min_items)
    png = evaluate_lib.quality_chart(table, Path(chart) if chart else settings.paths.home / "quality_over_time.png",
                                     f"{spec.name}: ranking quality over time")
    logger.info(
        "%d ranked days evaluated (%d pending), %d items with outcomes: %d day rows, %d month rows; "
        "mean monthly Spearman %.4f; chart %s",
        report.evaluated_days, report.pending_days, report.items_with_outcomes, report.day_rows, report.month_rows,
        report.mean_monthly_spearman, png,
    )
    publish_quality_artifacts(report, table, png)
    return {**as_dict(report), "chart": str(png)}
