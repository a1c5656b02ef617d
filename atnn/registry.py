"""The model registry: table `models` in the warehouse, and the champion that daily ranking uses.

Every trained model is registered. It becomes champion only if its validation AUC (generator, on
held-out warm items) is not worse than the current champion's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from atnn.spec import DatasetSpec
from atnn.warehouse import ensure_schema, session

if TYPE_CHECKING:
    from atnn.pipeline import TrainReport



class NoChampion(LookupError):
    """No model has been trained for this warehouse yet."""


def register(db: Path, spec: DatasetSpec, report: "TrainReport") -> bool:
    """Record a trained model; promote it if its validation AUC is not worse than the champion's."""
    metadata = json.loads((Path(report.onnx_path).parent / "metadata.json").read_text(encoding="utf-8"))
    new_auc = report.validation_auc_generator
    with session(db) as con:
        ensure_schema(con, spec)
        con.execute("BEGIN TRANSACTION")
        try:
            rows = con.execute(
                "SELECT version, validation_auc, feature_schema_hash FROM models WHERE champion AND model_name = ?",
                [report.model_name],
            ).fetchall()
            row = rows[0] if rows else None
            promote = (
                row is None
                or row[2] != spec.schema_hash()  # a champion of an old schema cannot rank today's features
                or row[1] is None
                or (not math.isnan(new_auc) and new_auc >= row[1])
            )
            if promote:
                con.execute("UPDATE models SET champion = false WHERE model_name = ?", [report.model_name])
            # The training data window starts at the first event before the cut-off.
            data_from = con.execute("SELECT min(ts) FROM events WHERE ts < ?", [report.as_of]).fetchall()[0][0]
            con.execute(
                """INSERT INTO models (version, model_name, created_at, data_as_of, validation_auc, metrics,
                                       artifact_path, checkpoint_path, feature_schema_hash, vocab_hash, champion, data_from)
                   VALUES (?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    report.version, report.model_name, report.as_of,
                    None if math.isnan(new_auc) else new_auc,
                    json.dumps(report.metrics()), str(Path(report.onnx_path).parent), report.checkpoint_dir,
                    spec.schema_hash(), metadata["vocab_hash"], promote, data_from,
                ],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return promote


def champion_dir(db: Path, spec: DatasetSpec, model_name: str | None = None) -> Path:
    """The exported model directory of the current champion."""
    with session(db, read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "models" not in tables:
            raise NoChampion(f"{db}: no model trained yet; run `atnn train` (or `make demo`) first")
        sql = "SELECT artifact_path FROM models WHERE champion"
        params: list = []
        if model_name:
            sql += " AND model_name = ?"
            params.append(model_name)
        rows = con.execute(sql + " ORDER BY created_at DESC LIMIT 1", params).fetchall()
    row = rows[0] if rows else None
    if row is None:
        raise NoChampion(f"{db}: no champion model; run `atnn train` first")
    return Path(row[0])
