"""Flow `ingest`: raw files -> canonical tables in DuckDB -> Parquet -> `feast apply` -> materialize."""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from atnn import pipeline, store
from flows.common import RETRY, as_dict, settings_for


@task(cache_policy=NO_CACHE, **RETRY)
def load_canonical(settings, spec, max_bad_share: float) -> pipeline.IngestReport:
    return pipeline.ingest(settings, spec, max_bad_share=max_bad_share)


@task(cache_policy=NO_CACHE, **RETRY)
def apply_feature_store(settings, spec) -> str:
    return store.apply(settings, spec)


@task(cache_policy=NO_CACHE, **RETRY)
def materialize_online(settings, spec) -> tuple[str, str]:
    first, last = pipeline.data_window(settings.paths.db)
    start, end = first - timedelta(days=1), last + timedelta(days=60)
    store.materialize(settings, spec, start, end)
    return start.isoformat(), end.isoformat()


@flow(name="ingest", log_prints=True)
def ingest(
    dataset: str = "ml-100k",
    profile: str | None = None,
    home: str | None = None,
    data_dir: str | None = None,
    materialize: bool = True,
    max_bad_share: float = 0.05,
) -> dict:
    """Validate and load a dataset, then apply and materialize the Feast feature store."""
    logger = get_run_logger()
    settings, spec = settings_for(dataset, profile, home, data_dir)
    report = load_canonical(settings, spec, max_bad_share)
    for table, c in report.counts.items():
        logger.info("%s: read %d = accepted %d + quarantined %d", table, c["read"], c["accepted"], c["quarantined"])
    apply_feature_store(settings, spec)
    if materialize:
        window = materialize_online(settings, spec)
        logger.info("materialized the online store for %s .. %s", *window)
    lines = [f"| {t} | {c['read']} | {c['accepted']} | {c['quarantined']} |" for t, c in report.counts.items()]
    reasons = "\n".join(f"- {r}: {n}" for r, n in report.quarantine_reasons.items()) or "- none"
    create_markdown_artifact(
        key="ingest-summary",
        markdown=f"# Ingest of {dataset}\n\n| table | read | accepted | quarantined |\n|---|---|---|---|\n"
        + "\n".join(lines) + f"\n\nQuarantine reasons:\n{reasons}\n",
        description=f"ingest run {report.run_id}",
    )
    return as_dict(report)
