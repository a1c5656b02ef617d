"""The Feast repository in a temp dir: apply, point-in-time retrieval, materialize + online read."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from atnn import pipeline, protocol, store
from atnn.spec import load_spec
from atnn.warehouse import read_sql

pytestmark = pytest.mark.slow
SPEC = load_spec("ml-100k")


@pytest.fixture
def applied(tiny_settings):
    pipeline.ingest(tiny_settings, SPEC)
    log = store.apply(tiny_settings, SPEC)
    assert "item_profile" in log and "atnn_training" in log
    return tiny_settings


def test_point_in_time_profile_and_statistics(applied):
    items = read_sql(applied.paths.db, "SELECT item_id, listed_at FROM items ORDER BY listed_at DESC LIMIT 3")
    item = int(items["item_id"].iloc[0])
    listed = pd.Timestamp(items["listed_at"].iloc[0])
    stats_known = listed + timedelta(days=SPEC.stats_window_days)
    entities = pd.DataFrame(
        {
            "item_id": [item, item, item, item],
            "user_id": [1, 1, 1, 1],
            "event_timestamp": [listed - timedelta(days=1), listed + timedelta(days=1), stats_known - timedelta(seconds=1), stats_known + timedelta(days=1)],
        }
    )
    frame = store.historical_features(applied, SPEC, entities, "atnn_training")
    assert len(frame) == 4  # every entity row kept, in order
    assert frame["event_timestamp"].is_monotonic_increasing
    # Before arrival: no profile. After: profile. Statistics only once the window has closed.
    assert frame["genres"].isna().tolist() == [True, False, False, False]
    assert frame["pv"].isna().tolist() == [True, True, True, False]
    expected_pv = read_sql(applied.paths.db, "SELECT pv FROM item_stats WHERE item_id = ?", [item])["pv"].iloc[0]
    assert frame["pv"].iloc[3] == expected_pv


def test_training_rows_from_feast_equal_direct_sql(applied):
    as_of = pd.Timestamp(read_sql(applied.paths.db, "SELECT max(ts) AS t FROM events")["t"].iloc[0]).to_pydatetime()
    entities = pipeline.training_entities(applied.paths.db, SPEC, as_of)
    via_feast = store.historical_features(applied, SPEC, entities, "atnn_training")
    tables = protocol.Tables.load(applied.paths.db)
    stats = read_sql(applied.paths.db, "SELECT * FROM item_stats")
    warm = entities["item_id"].unique()
    direct = protocol.event_frame(tables, SPEC, warm, stats, before=pd.Timestamp(as_of))
    key = ["user_id", "item_id"]
    a = via_feast.sort_values(key).reset_index(drop=True)
    b = direct.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 100
    for column in ["label", "genres", "year", "title", "age_band", "gender", *SPEC.stats]:
        left, right = a[column], b[column]
        if left.dtype.kind in "fi":
            np.testing.assert_allclose(left.astype(float), right.astype(float), equal_nan=True, err_msg=column)
        else:
            assert left.fillna("").tolist() == right.fillna("").tolist(), column


def test_materialize_then_online_profiles(applied):
    first, last = pipeline.data_window(applied.paths.db)
    store.materialize(applied, SPEC, first - timedelta(days=1), last + timedelta(days=60))
    ids = read_sql(applied.paths.db, "SELECT item_id, genres FROM items ORDER BY item_id LIMIT 5")
    online = store.online_item_profiles(applied, SPEC, ids["item_id"].tolist())
    assert online["genres"].tolist() == ids["genres"].tolist()
