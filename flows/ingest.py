"""Flow `ingest`: raw files -> canonical tables in DuckDB -> Parquet -> `feast apply` -> materialize."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from atnn import drops, pipeline, store
from flows.common import RETRY, as_dict, settings_for


@task(cache_policy=NO_CACHE, **RETRY)
def load_canonical(settings, spec, source: str | None = None, max_bad_share: float = 0.05) -> pipeline.IngestReport:
    return pipeline.ingest(settings, spec, raw_dir=Path(source) if source else None, max_bad_share=max_bad_share)


@task(cache_policy=NO_CACHE, **RETRY)
def load_drop(settings, spec, folder: str, max_bad_share: float = 0.05) -> drops.DropReport:
    return drops.ingest_drop(settings, spec, Path(folder), max_bad_share=max_bad_share)


@task(cache_policy=NO_CACHE, **RETRY)
def materialize_drops(settings, spec, reports: list) -> tuple[str, str]:
    start, end = drops.materialize_window(spec, reports)
    store.materialize(settings, spec, start, end)
    return start.isoformat(), end.isoformat()


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
    source: str | None = None,
    drop: str | None = None,
) -> dict:
    """Validate and load a dataset, then apply and materialize the Feast feature store.

    `source`: the folder of raw files (default: <data_dir>/<dataset>). `drop`: append a daily drop
    (a canonical folder), or every drop in a folder of them in name order, instead of a full load.
    """
    logger = get_run_logger()
    settings, spec = settings_for(dataset, profile, home, data_dir)
    if drop:
        return _ingest_drops(settings, spec, drop, materialize, max_bad_share)
    report = load_canonical(settings, spec, source, max_bad_share)
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


def _ingest_drops(settings, spec, drop: str, materialize: bool, max_bad_share: float = 0.05) -> dict:
    logger = get_run_logger()
    reports = [load_drop(settings, spec, str(folder), max_bad_share) for folder in drops.drop_folders(Path(drop))]
    for r in reports:
        if r.already_ingested:
            logger.info("drop %s (%s): already ingested, nothing changed", r.ds, r.source)
            continue
        for table, c in r.counts.items():
            logger.info("drop %s %s: read %d = accepted %d + quarantined %d (%d already stored)",
                        r.ds, table, c["read"], c["accepted"], c["quarantined"], r.unchanged.get(table, 0))
    apply_feature_store(settings, spec)
    if materialize:
        window = materialize_drops(settings, spec, reports)
        logger.info("materialized the online store for %s .. %s", *window)
    lines = [
        f"| {r.ds} | {t} | {c['read']} | {c['accepted']} | {r.unchanged.get(t, 0)} | {c['quarantined']} |"
        for r in reports if not r.already_ingested for t, c in r.counts.items()
    ]
    create_markdown_artifact(
        key="ingest-summary",
        markdown="# Drops ingested\n\n| drop | table | read | accepted | already stored | quarantined |\n|---|---|---|---|---|---|\n"
        + "\n".join(lines) + "\n\n" + "\n".join(f"- {r.ds}: already ingested" for r in reports if r.already_ingested),
        description=f"{len(reports)} drop(s) from {drop}",
    )
    counts: dict[str, dict[str, int]] = {}
    for r in reports:
        if r.already_ingested:
            continue
        for table, c in r.counts.items():
            total = counts.setdefault(table, {"read": 0, "accepted": 0, "quarantined": 0})
            for key in total:
                total[key] += c[key]
    return {"drops": [as_dict(r) for r in reports], "counts": counts}
