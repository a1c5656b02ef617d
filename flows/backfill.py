"""Flow `backfill`: rank every day of a date range in order, inside this one flow run."""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from atnn import backfill as backfill_lib
from flows.common import as_dict, feast_reader, settings_for


@task(cache_policy=NO_CACHE)
def rank_days(settings, spec, start: date, end: date | None) -> backfill_lib.BackfillReport:
    logger = get_run_logger()
    progress = create_progress_artifact(progress=0.0, key="backfill-progress", description="days ranked")
    every = 1

    def on_day(n: int, total: int, report) -> None:
        nonlocal every
        every = max(1, total // 20)  # about 20 progress updates whatever the range
        if report.new_arrivals:
            logger.debug("%s: %d ranked, %d skipped", report.ds, report.ranked, report.skipped)
        if n % every == 0 or n == total:
            update_progress_artifact(progress, progress=100.0 * n / total)
            logger.info("backfill: day %d/%d (%s) ranked", n, total, report.ds)

    return backfill_lib.backfill(settings, spec, start, end, feast_reader(settings, spec), on_day=on_day)


@flow(name="backfill", log_prints=True)
def backfill(
    start: str,
    end: str | None = None,
    dataset: str = "ml-100k",
    profile: str | None = None,
    home: str | None = None,
) -> dict:
    """Rank each day from `start` to `end` (default: the last day with events) with the champion, in order."""
    logger = get_run_logger()
    settings, spec = settings_for(dataset, profile, home)
    first = date.fromisoformat(str(start)[:10])
    last = date.fromisoformat(str(end)[:10]) if end else None
    report = rank_days(settings, spec, first, last)
    logger.info(
        "backfill %s..%s: %d days (%d with arrivals), %d ranked, %d skipped, model %s, %.1f s (bulk feature read %.1f s)",
        report.start, report.end, report.days, report.days_with_arrivals, report.ranked, report.skipped,
        report.model_version, report.seconds, report.prefetch_seconds,
    )
    create_markdown_artifact(
        key="backfill-summary",
        markdown=(
            f"# Backfill {report.start} .. {report.end}\n\n- days ranked: {report.days} ({report.days_with_arrivals} "
            f"with new arrivals)\n- items ranked: {report.ranked}, skipped: {report.skipped}\n"
            f"- model version: {report.model_version}\n- wall time: {report.seconds:.1f} s "
            f"(bulk feature read {report.prefetch_seconds:.1f} s)\n"
        ),
    )
    out = as_dict(report)
    out.pop("per_day")
    return out
