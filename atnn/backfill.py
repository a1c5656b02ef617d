"""Replay past days: rank each day of a date range in order, as the daily job would have.

A backfill loads the champion once and reads every arrival's profile in one point-in-time call
(each row stamped with the end of its own day, exactly what `rank_day` asks for one day), so a
day costs a DuckDB query and two short writes instead of a model load and a feature-store call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import pandas as pd

from atnn import registry
from atnn.config import Settings
from atnn.pipeline import FeatureReader, RankReport, rank_day
from atnn.scoring import OnnxScorer, day_bounds
from atnn.spec import DatasetSpec
from atnn.warehouse import read_sql


@dataclass
class BackfillReport:
    start: str
    end: str
    days: int
    days_with_arrivals: int
    ranked: int
    skipped: int
    model_version: str
    seconds: float
    prefetch_seconds: float
    per_day: list[dict] = field(default_factory=list)


def last_event_day(db: Path) -> date:
    return pd.Timestamp(read_sql(db, "SELECT max(ts) AS last FROM events")["last"].iloc[0]).date()


def prefetched_reader(read_features: FeatureReader, db: Path, start: date, end: date) -> tuple[FeatureReader, float]:
    """A reader that answers every day of [start, end] from one bulk point-in-time read.

    Requests it did not prefetch (another timestamp or item) go to `read_features` unchanged.
    """
    started = time.perf_counter()
    arrivals = read_sql(
        db,
        "SELECT item_id, listed_at FROM items WHERE listed_at >= ? AND listed_at < ? ORDER BY listed_at, item_id",
        [day_bounds(start)[0], day_bounds(end)[1]],
    )
    if arrivals.empty:
        return read_features, time.perf_counter() - started
    day_end = pd.to_datetime(arrivals["listed_at"], utc=True).dt.tz_localize(None).dt.floor("D") + pd.Timedelta(days=1)
    entities = arrivals[["item_id"]].assign(event_timestamp=day_end)
    cache: dict[str, pd.DataFrame] = {}

    def read(request: pd.DataFrame, service: str) -> pd.DataFrame:
        if service not in cache:
            cache[service] = read_features(entities, service).assign(_stamp=day_end.to_numpy())
        rows = cache[service]
        wanted = request.assign(_stamp=pd.to_datetime(request["event_timestamp"], utc=True).dt.tz_localize(None))
        found = wanted[["item_id", "_stamp"]].merge(rows, on=["item_id", "_stamp"], how="left", indicator=True)
        if (found["_merge"] != "both").any():
            return read_features(request, service)
        return found.drop(columns=["_stamp", "_merge"]).reset_index(drop=True)

    # Warm the cache now, so the bulk read is timed here and not inside the first day.
    read(entities.head(1), "atnn_ranking")
    return read, time.perf_counter() - started


def backfill(
    settings: Settings,
    spec: DatasetSpec,
    start: date,
    end: date | None,
    read_features: FeatureReader,
    *,
    model_dir: Path | None = None,
    on_day: Callable[[int, int, RankReport], None] | None = None,
) -> BackfillReport:
    """Rank every day from `start` to `end` (default: the last day with events), in order, with one model."""
    started = time.perf_counter()
    db = settings.paths.db
    end = end or last_event_day(db)
    if end < start:
        raise ValueError(f"backfill: end {end} is before start {start}")
    scorer = OnnxScorer(model_dir or registry.champion_dir(db, spec))
    scorer.check_compatible(spec)
    reader, prefetch_seconds = prefetched_reader(read_features, db, start, end)
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    reports = []
    for n, ds in enumerate(days, 1):
        report = rank_day(settings, spec, ds, reader, scorer=scorer)
        reports.append(report)
        if on_day:
            on_day(n, len(days), report)
    return BackfillReport(
        start=start.isoformat(),
        end=end.isoformat(),
        days=len(days),
        days_with_arrivals=sum(r.new_arrivals > 0 for r in reports),
        ranked=sum(r.ranked for r in reports),
        skipped=sum(r.skipped for r in reports),
        model_version=scorer.version,
        seconds=time.perf_counter() - started,
        prefetch_seconds=prefetch_seconds,
        per_day=[{"ds": r.ds, "new_arrivals": r.new_arrivals, "ranked": r.ranked, "seconds": round(r.seconds, 4)}
                 for r in reports],
    )
