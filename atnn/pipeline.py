"""The pipeline's stages as plain functions: ingest, training rows, training + export, ranking a day.

Flows in `flows/` are thin wrappers that call these; tests call them directly. Feature retrieval is
passed in (Feast in the flows), so this module needs neither Prefect nor Feast.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from atnn import artifacts, registry, similar
from atnn.canonical import validate
from atnn.config import Settings
from atnn.encoding import FeatureEncoder
from atnn.readers import read_raw
from atnn.scoring import OnnxScorer, Ranked, day_bounds, new_arrivals, rank_by_segment, rank_frame, write_rankings
from atnn.spec import DatasetSpec
from atnn.train import EpochRecord, build_training_data, fit, mean_user_vector, predict, segment_user_vectors
from atnn.metrics import auc
from atnn.warehouse import export_parquet, read_sql, session, write_canonical

log = logging.getLogger(__name__)

# (entity rows with event_timestamp, feature service name) -> rows with features, in the same order
FeatureReader = Callable[[pd.DataFrame, str], pd.DataFrame]


# ---------------------------------------------------------------- ingest


@dataclass
class IngestReport:
    run_id: str
    dataset: str
    counts: dict[str, dict[str, int]]
    quarantine_reasons: dict[str, int]
    seconds: float
    parquet: dict[str, str] = field(default_factory=dict)

    def reconciles(self) -> bool:
        return all(c["read"] == c["accepted"] + c["quarantined"] for c in self.counts.values())


def ingest(settings: Settings, spec: DatasetSpec, *, raw_dir: Path | None = None, max_bad_share: float = 0.05) -> IngestReport:
    """Raw files -> validated canonical tables + item statistics in DuckDB -> Parquet sources for Feast."""
    started = time.perf_counter()
    folder = raw_dir or settings.paths.dataset_dir(spec.name)
    canonical = validate(read_raw(spec, folder), spec, max_bad_share=max_bad_share)
    write_canonical(settings.paths.db, canonical, spec, prior_events=settings.train.prior_events, source=str(folder))
    parquet = export_parquet(settings.paths.db, settings.paths.canonical_dir, spec)
    reasons = canonical.quarantine["reason"].value_counts().to_dict() if len(canonical.quarantine) else {}
    return IngestReport(
        run_id=canonical.run_id,
        dataset=spec.name,
        counts=canonical.counts,
        quarantine_reasons={str(k): int(v) for k, v in reasons.items()},
        seconds=time.perf_counter() - started,
        parquet={k: str(v) for k, v in parquet.items()},
    )


def data_window(db: Path) -> tuple[datetime, datetime]:
    """First and last event time in the warehouse."""
    row = read_sql(db, "SELECT min(ts) AS first, max(ts) AS last FROM events").iloc[0]
    return pd.Timestamp(row["first"]).to_pydatetime(), pd.Timestamp(row["last"]).to_pydatetime()


def busiest_arrival_day(db: Path, warmup_days: int = 90) -> date:
    """The day with the most new arrivals after a warm-up period (ties: the latest): a good demo day."""
    frame = read_sql(
        db,
        f"""SELECT listed_at::DATE AS ds, count(*) AS n FROM items
            WHERE listed_at >= (SELECT min(listed_at) FROM items) + INTERVAL {int(warmup_days)} DAY
            GROUP BY ds ORDER BY n DESC, ds DESC LIMIT 1""",
    )
    if frame.empty:
        raise ValueError("no item arrives after the warm-up period; pass a date explicitly")
    return pd.Timestamp(frame["ds"].iloc[0]).date()


# ---------------------------------------------------------------- training


def training_entities(db: Path, spec: DatasetSpec, as_of: datetime) -> pd.DataFrame:
    """Entity rows for training as of `as_of`: events before it, of warm items whose statistics
    window has closed by then; every row is stamped `as_of` for the point-in-time join."""
    return read_sql(
        db,
        f"""SELECT e.user_id, e.item_id, e.label, CAST(? AS TIMESTAMP) AS event_timestamp
            FROM events e JOIN items i USING (item_id)
            WHERE e.ts < ? AND i.listed_at + INTERVAL {int(spec.stats_window_days)} DAY <= ?
            ORDER BY e.ts, e.user_id, e.item_id""",
        [as_of, as_of, as_of],
    )


@dataclass
class TrainReport:
    model_name: str
    version: str
    as_of: str
    train_events: int
    validation_events: int
    train_items: int
    validation_items: int
    users: int
    best_epoch: int
    validation_auc_generator: float
    validation_auc_encoder: float
    onnx_max_abs_diff: float
    train_seconds: float
    checkpoint_dir: str
    onnx_path: str
    promoted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        keys = ("validation_auc_generator", "validation_auc_encoder", "best_epoch", "train_events", "train_items",
                "validation_items", "onnx_max_abs_diff", "train_seconds")
        return {k: getattr(self, k) for k in keys}


def split_items(item_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a share of items (not events) for validation: they play the new arrivals."""
    ids = np.sort(np.unique(item_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = max(1, int(round(fraction * len(ids)))) if fraction > 0 else 0
    return np.sort(ids[order[n_val:]]), np.sort(ids[order[:n_val]])


def train_and_export(
    settings: Settings,
    spec: DatasetSpec,
    frame: pd.DataFrame,
    *,
    as_of: datetime,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainReport:
    """Fit ATNN on training rows (features joined), save the checkpoint, export ONNX, register it."""
    if frame.empty:
        raise ValueError(f"no training rows as of {as_of}: no item's statistics window has closed yet")
    missing = frame[list(spec.stats)].isna().all(axis=1)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} training rows have no item statistics; they are not warm items")
    train_ids, val_ids = split_items(frame["item_id"].to_numpy(), settings.train.validation_fraction, settings.train.seed)
    train_rows = frame[frame["item_id"].isin(train_ids)]
    val_rows = frame[frame["item_id"].isin(val_ids)]
    train_items = train_rows.drop_duplicates("item_id")
    users = frame.drop_duplicates("user_id")
    encoder = FeatureEncoder.fit(spec, train_items, users, train_items)
    train_data = build_training_data(train_rows, encoder, spec)
    val_data = build_training_data(val_rows, encoder, spec) if len(val_rows) else None
    result = fit(train_data, val_data, encoder, settings.model, settings.train, on_epoch=on_epoch)

    # Mean user vector over the most active users of the whole training window.
    all_data = build_training_data(frame, encoder, spec)
    vector, chosen = mean_user_vector(result.model, all_data, settings.train.top_k_users)
    mean_user = artifacts.MeanUserVector(vector=[float(x) for x in vector], k=settings.train.top_k_users, num_users=len(chosen))
    if spec.segment_fields:  # one mean vector per user segment, beside the global one
        names, segments = segment_user_vectors(result.model, all_data, users, list(spec.segment_fields))
        mean_user.segment_fields = list(spec.segment_fields)
        mean_user.segments = {name: [float(x) for x in v] for name, v in zip(names, segments)}

    version = artifacts.new_version()
    model_name = f"{settings.model_name}-{spec.name}"
    enc_auc = auc(val_data.label, predict(result.model, val_data, generated=False)) if val_data else float("nan")
    info = {"as_of": as_of.isoformat(), "dataset": spec.name, "profile": settings.profile}
    checkpoint = artifacts.Checkpoint(
        result.model, encoder, settings.model, settings.train, spec.schema_hash(), mean_user, info
    )
    checkpoint_dir = artifacts.save_checkpoint(settings.paths.models_dir / model_name / version, checkpoint)
    report = TrainReport(
        model_name=model_name,
        version=version,
        as_of=as_of.isoformat(),
        train_events=len(train_rows),
        validation_events=len(val_rows),
        train_items=len(train_ids),
        validation_items=len(val_ids),
        users=len(users),
        best_epoch=result.best_epoch,
        validation_auc_generator=result.best_val_auc,
        validation_auc_encoder=enc_auc,
        onnx_max_abs_diff=float("nan"),
        train_seconds=result.train_seconds,
        checkpoint_dir=str(checkpoint_dir),
        onnx_path="",
        history=[asdict(r) for r in result.history],
    )
    onnx_dir = settings.paths.onnx_dir / model_name / version
    onnx_path = artifacts.export_onnx(checkpoint, onnx_dir, model_name=model_name, version=version, spec=spec, metrics=report.metrics())
    # Check the exported graph against torch on real rows before anyone ranks with it.
    sample = val_rows.drop_duplicates("item_id") if len(val_rows) else train_items
    report.onnx_max_abs_diff = artifacts.max_abs_difference(checkpoint, onnx_path, encoder.encode(sample.head(512), "item"))
    report.onnx_path = str(onnx_path)
    metadata = json.loads((onnx_dir / "metadata.json").read_text(encoding="utf-8"))
    metadata["metrics"] = report.metrics()
    artifacts._write_json(onnx_dir / "metadata.json", metadata)
    report.promoted = registry.register(settings.paths.db, spec, report)
    return report


# ---------------------------------------------------------------- ranking


@dataclass
class RankReport:
    ds: str
    model_version: str
    new_arrivals: int
    ranked: int
    skipped: int
    skipped_reasons: dict[str, int]
    seconds: float
    top: list[dict[str, Any]] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (feature_read_s, scoring_s, write_s, ...)


def ranking_time(ds: date, arrivals: pd.DataFrame) -> datetime:
    """When a day's profiles are read: the end of the day, or just after its last arrival if later."""
    _, end = day_bounds(ds)
    if len(arrivals):
        end = max(end, pd.Timestamp(arrivals["listed_at"].max()).to_pydatetime() + timedelta(seconds=1))
    return end


def score_arrivals(
    scorer: OnnxScorer,
    arrivals: pd.DataFrame,
    as_of: datetime,
    read_features: FeatureReader,
    stages: dict[str, float] | None = None,
    *,
    keep_vectors: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profiles of `arrivals` as of `as_of` in one bulk read, scored in batches: (scored, skipped).

    Row-wise, so any partition of the arrivals scores each item exactly as the whole day does
    (the scale-out flow maps this over partitions). `stages` receives feature_read_s and scoring_s.
    """
    stages = {} if stages is None else stages
    t0 = time.perf_counter()
    if len(arrivals):
        entities = arrivals[["item_id"]].assign(event_timestamp=as_of)
        profiles = read_features(entities, "atnn_ranking")
        profiles = profiles.merge(arrivals, on="item_id", how="left")
    else:
        profiles = arrivals
    t1 = time.perf_counter()
    if len(profiles):
        scored, skipped = scorer.score(profiles, keep_vectors=keep_vectors)
    else:
        scored, skipped = profiles.assign(score=[]), profiles[["item_id"]].assign(reason=[])
    stages["feature_read_s"] = stages.get("feature_read_s", 0.0) + t1 - t0
    stages["scoring_s"] = stages.get("scoring_s", 0.0) + time.perf_counter() - t1
    return scored, skipped


def finish_ranking(
    settings: Settings,
    spec: DatasetSpec,
    ds: date,
    scorer: OnnxScorer,
    arrivals: pd.DataFrame,
    scored: pd.DataFrame,
    skipped: pd.DataFrame,
    *,
    started: float,
    stages: dict[str, float] | None = None,
    neighbours: bool = True,
) -> RankReport:
    """Rank the scored items and write the day (rankings, segments, skipped) in one transaction;
    then the nearest warm items unless `neighbours` is False."""
    stages = {} if stages is None else stages
    t0 = time.perf_counter()
    ranked = rank_frame(scored, spec)
    by_segment = rank_by_segment(scorer.metadata, scored)  # rankings_by_segment, same transaction
    write_rankings(settings.paths.db, Ranked(ds, scorer.version, ranked, skipped, by_segment), spec)
    stages["write_s"] = time.perf_counter() - t0
    if neighbours:
        t0 = time.perf_counter()
        similar.write_similar_items(settings.paths.db, spec, scorer, ds, scored)  # needs scored["item_vector"]
        stages["similar_items_s"] = time.perf_counter() - t0
    top = ranked.head(10)[["rank", "item_id", "score", "title", "category"]]
    return RankReport(
        ds=ds.isoformat(),
        model_version=scorer.version,
        new_arrivals=len(arrivals),
        ranked=len(ranked),
        skipped=len(skipped),
        skipped_reasons={str(k): int(v) for k, v in skipped["reason"].value_counts().items()} if len(skipped) else {},
        seconds=time.perf_counter() - started,
        top=json.loads(top.to_json(orient="records")),
        stages={k: round(v, 4) for k, v in stages.items()},
    )


def rank_day(
    settings: Settings,
    spec: DatasetSpec,
    ds: date,
    read_features: FeatureReader,
    *,
    model_dir: Path | None = None,
    arrivals: pd.DataFrame | None = None,
    scorer: OnnxScorer | None = None,
    neighbours: bool = True,
) -> RankReport:
    """Rank the new arrivals of `ds` with the champion model (or `model_dir`) into `rankings`.

    `arrivals` (item_id, listed_at): rank exactly these items under `ds` instead (a daily drop's).
    `scorer`: an already loaded model (a backfill loads the champion once for all its days).
    `neighbours`: also write `similar_items` (brute-force nearest warm items: off for scale runs).
    """
    started = time.perf_counter()
    stages: dict[str, float] = {}
    if scorer is None:
        scorer = OnnxScorer(model_dir or registry.champion_dir(settings.paths.db, spec))
    scorer.check_compatible(spec)
    if arrivals is None:
        arrivals = new_arrivals(settings.paths.db, ds)
    stages["arrivals_s"] = time.perf_counter() - started
    scored, skipped = score_arrivals(scorer, arrivals, ranking_time(ds, arrivals), read_features, stages,
                                     keep_vectors=scorer.needs_vectors(neighbours))
    return finish_ranking(settings, spec, ds, scorer, arrivals, scored, skipped, started=started, stages=stages, neighbours=neighbours)
