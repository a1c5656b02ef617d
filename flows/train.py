"""Flow `train`: training rows from Feast (point-in-time) -> ATNN (Algorithm 1) -> ONNX -> registry."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from atnn import evaluate, pipeline, store
from flows.common import RETRY, as_dict, settings_for
from flows.reporting import publish_train_artifacts


@task(cache_policy=NO_CACHE, **RETRY)
def training_rows(settings, spec, as_of: datetime) -> pd.DataFrame:
    entities = pipeline.training_entities(settings.paths.db, spec, as_of)
    return store.historical_features(settings, spec, entities, "atnn_training")


@task(cache_policy=NO_CACHE)
def fit_and_export(settings, spec, frame: pd.DataFrame, as_of: datetime) -> pipeline.TrainReport:
    logger = get_run_logger()

    def progress(record) -> None:
        logger.info(
            "epoch %d/%d: L_i %.4f L_g %.4f L_s %.4f, validation AUC generator %.4f",
            record.epoch, settings.train.epochs, record.l_i, record.l_g, record.l_s, record.val_auc_generated,
        )

    return pipeline.train_and_export(settings, spec, frame, as_of=as_of, on_epoch=progress)


def parse_as_of(as_of: str | None) -> datetime:
    if not as_of:
        return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    return pd.Timestamp(as_of).tz_localize(None).to_pydatetime() if pd.Timestamp(as_of).tzinfo else pd.Timestamp(as_of).to_pydatetime()


@flow(name="train", log_prints=True)
def train(
    dataset: str = "ml-100k",
    as_of: str | None = None,
    profile: str | None = None,
    home: str | None = None,
    onnx_dir: str | None = None,
) -> dict:
    """Train on everything known before `as_of` (default: now) and export the generator to ONNX."""
    logger = get_run_logger()
    settings, spec = settings_for(dataset, profile, home, onnx_dir=onnx_dir)
    when = parse_as_of(as_of)
    frame = training_rows(settings, spec, when)
    logger.info("%d training rows as of %s", len(frame), when)
    report = fit_and_export(settings, spec, frame, when)
    epochs = len(report.history)
    stopped = (f"stopped early after epoch {epochs} of {settings.train.epochs} ({settings.train.patience} without a better "
               "validation AUC)") if epochs < settings.train.epochs else f"ran all {epochs} epochs"
    logger.info(
        "model %s: %s, kept epoch %d; validation AUC generator %.4f, encoder %.4f; ONNX max |diff| %.2e; champion: %s",
        report.version, stopped, report.best_epoch, report.validation_auc_generator, report.validation_auc_encoder,
        report.onnx_max_abs_diff, report.promoted,
    )
    curve = evaluate.learning_curve_chart(
        report.history, Path(report.checkpoint_dir) / "learning_curve.png", f"{report.model_name} {report.version}"
    )
    publish_train_artifacts(report, curve)
    return as_dict(report)
