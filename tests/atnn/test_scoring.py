"""Ranking writes: one transaction per day, idempotent, other days untouched; schema checks."""

import json
from datetime import date

import pandas as pd
import pytest

from atnn.scoring import OnnxScorer, Ranked, SchemaMismatch, rank_frame, write_rankings
from atnn.spec import load_spec
from atnn.warehouse import read_sql

SPEC = load_spec("ml-100k")


def _ranked(ids, scores):
    scored = pd.DataFrame({"item_id": ids, "score": scores, "title": [f"t{i}" for i in ids], "genres": "Drama",
                           "listed_at": pd.Timestamp("1998-01-01")})
    return rank_frame(scored, SPEC)


def test_rank_frame_orders_by_score_then_id():
    ranked = _ranked([5, 3, 9], [0.2, 0.9, 0.9])
    assert ranked["item_id"].tolist() == [3, 9, 5]
    assert ranked["rank"].tolist() == [1, 2, 3]
    assert ranked["category"].tolist() == ["Drama"] * 3


def test_rerank_replaces_only_that_day(tmp_path):
    db = tmp_path / "w.duckdb"
    empty = pd.DataFrame(columns=["item_id", "reason"])
    write_rankings(db, Ranked(date(1998, 1, 1), "v1", _ranked([1, 2, 3], [0.1, 0.2, 0.3]), empty), SPEC)
    write_rankings(db, Ranked(date(1998, 1, 2), "v1", _ranked([4, 5], [0.5, 0.4]), empty), SPEC)
    before = read_sql(db, "SELECT * FROM rankings WHERE ds = '1998-01-02' ORDER BY rank")
    write_rankings(db, Ranked(date(1998, 1, 1), "v2", _ranked([1, 2], [0.9, 0.8]), empty), SPEC)
    write_rankings(db, Ranked(date(1998, 1, 1), "v2", _ranked([1, 2], [0.9, 0.8]), empty), SPEC)
    day1 = read_sql(db, "SELECT item_id, rank, model_version FROM rankings WHERE ds = '1998-01-01' ORDER BY rank")
    assert day1.values.tolist() == [[1, 1, "v2"], [2, 2, "v2"]]
    after = read_sql(db, "SELECT * FROM rankings WHERE ds = '1998-01-02' ORDER BY rank")
    pd.testing.assert_frame_equal(before, after)


def test_schema_mismatch_names_both_versions_and_the_inputs(tmp_path):
    from dataclasses import replace

    from atnn.encoding import FeatureEncoder, FittedFeature

    scorer = OnnxScorer.__new__(OnnxScorer)
    scorer.metadata = {"spec_hash": "0000111122223333", "model_name": "atnn-ml-100k", "version": "v1"}
    trained = [FittedFeature(name=f.name, side=f.side, kind=f.kind) for f in (*SPEC.item_inputs, *SPEC.user_inputs)]
    scorer.encoder = FeatureEncoder(trained, [], [], [])
    with pytest.raises(SchemaMismatch, match=f"schema 0000111122223333, but spec 'ml-100k' now has schema {SPEC.schema_hash()} "
                                             r"\(the same inputs; an option of one of them, or the statistics, changed\)"):
        scorer.check_compatible(SPEC)
    # The title embedding switched on and the decade dropped: both named.
    changed = replace(SPEC, item_features=tuple(
        replace(f, embedding="all-MiniLM-L6-v2" if f.name == "title" else "") for f in SPEC.item_features if f.name != "decade"))
    with pytest.raises(SchemaMismatch, match=r"new inputs \['title_embedding'\]; inputs no longer in the spec \['decade'\]"):
        scorer.check_compatible(changed)
    scorer.metadata["spec_hash"] = SPEC.schema_hash()
    scorer.check_compatible(SPEC)
