"""Closing the loop: realized popularity, ranking_quality rows, the SQL surface, nearest warm items."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atnn import evaluate, similar
from atnn.spec import load_spec
from atnn.warehouse import ensure_schema, read_sql, session

SPEC = load_spec("ml-100k")


def outcomes(day: str, scores, ctrs, version: str = "v1") -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame({"ds": [pd.Timestamp(day).date()] * n, "model_version": version, "item_id": range(n),
                         "score": scores, "ctr": ctrs})


def test_quality_table_per_day_with_enough_items_and_pooled_per_month():
    perfect = outcomes("2016-01-03", [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    reversed_small = outcomes("2016-01-20", [0.1, 0.2, 0.3, 0.4], [0.6, 0.5, 0.4, 0.3])
    february = outcomes("2016-02-01", [0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1])
    table = evaluate.quality_table(pd.concat([perfect, reversed_small, february], ignore_index=True))
    assert list(table.columns) == evaluate.QUALITY_COLUMNS
    days = table[table["grain"] == "day"].set_index("ds")
    # 2016-01-20 has only 4 items with outcomes: no day row, but it counts in January.
    assert list(days.index) == [date(2016, 1, 3), date(2016, 2, 1)]
    assert days.loc[date(2016, 1, 3), "spearman"] == pytest.approx(1.0)
    assert days.loc[date(2016, 2, 1), "spearman"] == pytest.approx(-1.0)
    assert days.loc[date(2016, 1, 3), "ndcg_at_10"] == pytest.approx(1.0)
    months = table[table["grain"] == "month"].set_index("ds")
    assert months.loc[date(2016, 1, 1), "n_items"] == 10
    january = pd.concat([perfect, reversed_small])
    from scipy.stats import spearmanr

    assert months.loc[date(2016, 1, 1), "spearman"] == pytest.approx(spearmanr(january["ctr"], january["score"]).statistic)


@pytest.fixture
def warehouse(tmp_path) -> Path:
    """Three items ranked on 2016-01-01, events inside and outside their 30-day windows."""
    db = tmp_path / "atnn.duckdb"
    listed = datetime(2016, 1, 1, 10)
    items = pd.DataFrame({"item_id": [1, 2, 3, 9], "listed_at": [listed, listed, listed, datetime(2015, 1, 1)]})
    rows = []
    # item 1: 6 events in window, 5 positive; item 2: 5 in window, 0 positive, plus 5 positive after it;
    # item 3: 2 events only; item 9 (warm): 20 events before, half positive (the warm rate 0.5).
    rows += [(u, 1, listed + timedelta(days=u), int(u < 5)) for u in range(6)]
    rows += [(u, 2, listed + timedelta(days=u), 0) for u in range(5)]
    rows += [(u, 2, listed + timedelta(days=31 + u), 1) for u in range(5)]
    rows += [(u, 3, listed + timedelta(days=u), 1) for u in range(2)]
    rows += [(u, 9, datetime(2015, 1, 1) + timedelta(days=u), u % 2) for u in range(20)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "label"])
    ranked = pd.DataFrame({"ds": date(2016, 1, 1), "item_id": [1, 2, 3], "score": [0.9, 0.5, 0.1], "rank": [1, 2, 3],
                           "model_version": "v1", "title": ["a", "b", "c"], "category": "Drama", "listed_at": listed,
                           "ranked_at": datetime(2016, 1, 2)})
    with session(db) as con:
        ensure_schema(con, SPEC)
        con.register("i", items)
        con.register("e", events)
        con.register("r", ranked)
        con.execute("CREATE TABLE items AS SELECT * FROM i")
        con.execute("CREATE TABLE events AS SELECT * FROM e")
        con.execute("INSERT INTO rankings BY NAME SELECT * FROM r")
    return db


def test_realized_outcomes_count_only_the_window_and_smooth_toward_warm_rate(warehouse):
    out = evaluate.realized_outcomes(warehouse).set_index("item_id")
    assert sorted(out.index) == [1, 2]  # item 3 has 2 events (< 5)
    assert out.loc[1, "volume"] == 6 and out.loc[1, "positives"] == 5
    assert out.loc[2, "volume"] == 5 and out.loc[2, "positives"] == 0  # the 5 later positives are outside the window
    assert out.loc[1, "ctr"] == pytest.approx((5 + 10 * 0.5) / (6 + 10))
    assert out.loc[2, "ctr"] == pytest.approx((0 + 10 * 0.5) / (5 + 10))


def test_evaluate_writes_ranking_quality_and_sql_surface_answers(warehouse, tmp_path):
    report, table = evaluate.evaluate(warehouse, SPEC, min_events=1, min_items=3)
    assert report.evaluated_days == 1 and report.items_with_outcomes == 3
    stored = read_sql(warehouse, "SELECT * FROM ranking_quality ORDER BY grain")
    assert list(stored["grain"]) == ["day", "month"] and list(stored["n_items"]) == [3, 3]
    # Scores 0.9 > 0.5 > 0.1 against ctr 10/16 > 7/12 (item 3: 2/2 positives) > 5/15: not monotone.
    assert stored["spearman"].iloc[0] == pytest.approx(0.5)
    evaluate.evaluate(warehouse, SPEC, min_events=1, min_items=3)  # again: replaced, not appended
    assert len(read_sql(warehouse, "SELECT * FROM ranking_quality")) == 2
    top = read_sql(warehouse, "SELECT rank, title FROM top_new_arrivals('2016-01-01', 2)")
    assert top.to_dict("list") == {"rank": [1, 2], "title": ["a", "b"]}
    assert len(read_sql(warehouse, "SELECT * FROM latest_rankings")) == 3
    png = evaluate.quality_chart(table, tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeScorer:
    """Generated vectors by item id: a stand-in for OnnxScorer in similar_items."""

    version = "v1"

    def __init__(self, vectors: dict[int, list[float]]):
        self.vectors = vectors

    def score(self, profiles: pd.DataFrame):
        scored = profiles.assign(score=0.5)
        scored["item_vector"] = [np.asarray(self.vectors[i], np.float32) for i in profiles["item_id"]]
        return scored, profiles[["item_id"]].iloc[:0]


def test_similar_items_are_nearest_warm_items_by_cosine(tmp_path):
    db = tmp_path / "atnn.duckdb"
    day = date(2016, 3, 1)
    items = pd.DataFrame({
        "item_id": [1, 2, 3, 4, 5, 6, 7, 8],
        "title": [f"t{i}" for i in range(1, 9)],
        # 7 was listed 10 days before the day: not warm yet (30-day window); 8 is the new arrival.
        "listed_at": [datetime(2015, 1, i) for i in range(1, 7)] + [datetime(2016, 2, 20), datetime(2016, 3, 1, 9)],
    })
    vectors = {1: [1, 0], 2: [0.9, 0.1], 3: [0, 1], 4: [-1, 0], 5: [0.5, 0.5], 6: [0.7, -0.1], 7: [1, 0.01], 8: [2, 0]}
    with session(db) as con:
        ensure_schema(con, SPEC)
        con.register("i", items)
        con.execute("CREATE TABLE items AS SELECT * FROM i")
    scorer = FakeScorer(vectors)
    scored, _ = scorer.score(items[items["item_id"] == 8])
    assert similar.write_similar_items(db, SPEC, scorer, day, scored) == 5
    rows = read_sql(db, "SELECT * FROM similar_items ORDER BY neighbor_rank")
    assert list(rows["similar_item_id"]) == [1, 2, 6, 5, 3]  # 7 is closest but not warm; 4 is opposite
    assert rows["similarity"].iloc[0] == pytest.approx(1.0)
    assert list(rows["similar_title"][:2]) == ["t1", "t2"]
    similar.write_similar_items(db, SPEC, scorer, day, scored)  # the day is replaced, not appended
    assert len(read_sql(db, "SELECT * FROM similar_items")) == 5
