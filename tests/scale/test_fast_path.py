"""The fast daily path: DuckDB point-in-time read == Feast's, streaming training, partitions."""

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from atnn import pipeline, scale, store
from atnn.train import parquet_event_chunks, with_events


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype({c: object for c in frame.columns if frame[c].dtype != "float64" and c != "event_timestamp"})
    return out.where(out.notna(), None).reset_index(drop=True)


@pytest.mark.parametrize("when", ["2024-01-01", "2024-01-06 12:00", "2024-01-14"])
def test_point_in_time_read_equals_feast_historical_features(synth_home, when):
    settings, spec, _ = synth_home
    items = store.historical_features(settings, spec, pd.DataFrame({"item_id": [1], "event_timestamp": [pd.Timestamp("2030-01-01", tz="UTC")]}), "atnn_ranking")
    rng = np.random.default_rng(0)
    ids = np.r_[rng.choice(np.arange(1, 2201), 300, replace=False), [999_999]]  # and an unknown item
    entities = pd.DataFrame({"item_id": ids, "event_timestamp": pd.Timestamp(when, tz="UTC")})
    feast_rows = store.historical_features(settings, spec, entities, "atnn_ranking")
    duckdb_rows = store.point_in_time_features(settings, spec, entities, "atnn_ranking")
    assert list(duckdb_rows.columns) == list(feast_rows.columns) and len(items) == 1
    pd.testing.assert_frame_equal(_comparable(duckdb_rows), _comparable(feast_rows[list(duckdb_rows.columns)]), check_dtype=False)
    known = int(duckdb_rows["category"].notna().sum())  # listed by then: none, some, all but the unknown one
    assert known == 0 if when == "2024-01-01" else (known == 300 if when == "2024-01-14" else 0 < known < 300)


def test_point_in_time_read_with_row_timestamps_and_several_views(synth_home):
    settings, spec, _ = synth_home
    rng = np.random.default_rng(1)
    entities = pd.DataFrame({
        "user_id": rng.integers(1, 401, 200), "item_id": rng.integers(1, 2201, 200),
        "event_timestamp": pd.Timestamp("2024-01-02", tz="UTC") + pd.to_timedelta(rng.integers(0, 12 * 86400, 200), unit="s"),
    })
    feast_rows = store.historical_features(settings, spec, entities, "atnn_training")
    duckdb_rows = store.point_in_time_features(settings, spec, entities, "atnn_training")
    assert duckdb_rows["pv"].notna().any() and duckdb_rows["pv"].isna().any()  # stats known only after the window
    pd.testing.assert_frame_equal(_comparable(duckdb_rows), _comparable(feast_rows[list(duckdb_rows.columns)]), check_dtype=False)


def test_partitions_are_whole_batches_and_cover_the_day():
    arrivals = pd.DataFrame({"item_id": np.arange(10), "listed_at": pd.Timestamp("2024-01-01")})
    parts = scale.partition_arrivals(arrivals, 3, batch_size=3)
    assert [len(p) for p in parts] == [6, 3, 1]  # 4 batches in 3 parts: 2 + 1 + 1, no batch split
    assert pd.concat(parts, ignore_index=True).equals(arrivals)
    assert [len(p) for p in scale.partition_arrivals(arrivals, 2, batch_size=4)] == [8, 2]


def test_partitioned_scoring_gives_the_in_process_ranks(synth_home):
    from atnn.scoring import new_arrivals
    from flows.common import ranking_reader

    settings, spec, ds = synth_home
    scorer = scale.cached_scorer(str(__import__("atnn.registry", fromlist=["x"]).champion_dir(settings.paths.db, spec)))
    arrivals = new_arrivals(settings.paths.db, ds)
    as_of = pipeline.ranking_time(ds, arrivals)
    reader = ranking_reader(settings, spec)
    whole, _ = pipeline.score_arrivals(scorer, arrivals, as_of, reader)
    parts = [scale.score_partition(scorer, p, as_of, reader) for p in scale.partition_arrivals(arrivals, 3, batch_size=128)]
    scored, skipped, stages = scale.concat_partitions(parts)
    assert len(parts) == 3 and len(scored) == len(arrivals) == 700 and "item_vector" not in scored
    assert stages["scoring_s"] > 0
    from atnn.scoring import rank_frame

    assert scale.ranks_identical(rank_frame(whole, spec), rank_frame(scored, spec))
    changed = scored.assign(score=scored["score"].where(scored.index != 5, -1.0))
    assert not scale.ranks_identical(rank_frame(whole, spec), rank_frame(changed, spec))


def test_streaming_training_learns_and_drops_held_out_items(synth_home, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from atnn.warehouse import read_sql

    settings, spec, ds = synth_home
    models = read_sql(settings.paths.db, "SELECT metrics FROM models WHERE champion")
    metrics = __import__("json").loads(models["metrics"].iloc[0])
    assert metrics["validation_auc_generator"] > 0.6, metrics  # the planted signal is learnable from profiles
    log = tmp_path / "events.parquet"
    pq.write_table(pa.table({"item_id": np.arange(10) % 4, "user_id": np.arange(10) % 3, "label": np.ones(10, np.float32)}), log)
    chunks = list(parquet_event_chunks(log, chunk_events=4)())
    assert [len(c[0]) for c in chunks] == [4, 4, 2]
    from atnn.train import TrainingData

    base = TrainingData(np.array([0, 1, 2]), {}, np.zeros((3, 0), np.float32), np.array([0, 1]), {}, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    data = with_events(base, *chunks[0])  # items 0..3 and users 0..2: item 3 and user 2 are not in base
    assert data.item_index.tolist() == [0, 1] and data.user_index.tolist() == [0, 1]


def test_daily_rank_reports_its_stages(synth_home):
    from flows.common import ranking_reader

    settings, spec, ds = synth_home
    report = pipeline.rank_day(settings, spec, ds, ranking_reader(settings, spec), neighbours=False)
    assert report.ranked == 700 and set(report.stages) >= {"feature_read_s", "scoring_s", "write_s"}
    assert "similar_items_s" not in report.stages
