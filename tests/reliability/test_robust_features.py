"""Robust features at ranking time: unseen categories, missing or NaN numbers, unusable profiles."""

from datetime import date

import numpy as np
import pandas as pd
import pytest
import yaml

from atnn import pipeline, protocol
from atnn.canonical import validate
from atnn.encoding import FeatureEncoder
from atnn.readers import RawTables
from atnn.spec import load_spec, parse_spec
from atnn.warehouse import read_sql

pytestmark = pytest.mark.slow
SPEC = load_spec("ml-100k")


@pytest.fixture
def trained(tiny_settings):
    pipeline.ingest(tiny_settings, SPEC)
    as_of = pd.Timestamp(read_sql(tiny_settings.paths.db, "SELECT max(ts) AS t FROM events")["t"].iloc[0]).to_pydatetime()
    entities = pipeline.training_entities(tiny_settings.paths.db, SPEC, as_of)
    tables = protocol.Tables.load(tiny_settings.paths.db)
    stats = read_sql(tiny_settings.paths.db, "SELECT * FROM item_stats")
    frame = protocol.event_frame(tables, SPEC, entities["item_id"].unique(), stats, before=pd.Timestamp(as_of))
    report = pipeline.train_and_export(tiny_settings, SPEC, frame, as_of=as_of)
    return tiny_settings, report


def test_unusable_profile_is_skipped_with_reason_and_the_rest_ranked(trained):
    settings, _ = trained
    day = pd.Timestamp(read_sql(settings.paths.db, "SELECT max(listed_at) AS t FROM items")["t"].iloc[0]).date()
    arrivals = read_sql(settings.paths.db, "SELECT item_id FROM items WHERE listed_at::DATE = ?", [day])["item_id"].tolist()

    def read_features(entities, service):
        rows = []
        for k, item in enumerate(entities["item_id"]):
            if k == 0:  # nothing known about this one
                rows.append({"item_id": item, "genres": None, "year": np.nan, "decade": None, "title": "  "})
            else:  # an unseen genre, a NaN year, an unseen decade
                rows.append({"item_id": item, "genres": "Space Opera|Drama", "year": float("nan"), "decade": "2090s", "title": "Brand New"})
        return pd.DataFrame(rows)

    report = pipeline.rank_day(settings, SPEC, day, read_features)
    assert report.new_arrivals == len(arrivals)
    assert report.skipped == 1 and report.ranked == len(arrivals) - 1
    assert report.skipped_reasons == {"no usable profile: every item profile field is missing": 1}
    skipped = read_sql(settings.paths.db, "SELECT item_id, reason FROM skipped_items WHERE ds = ?", [day])
    assert skipped["item_id"].tolist() == [arrivals[0]]
    scores = read_sql(settings.paths.db, "SELECT score FROM rankings WHERE ds = ?", [day])["score"]
    assert np.isfinite(scores).all() and len(scores) == report.ranked


def test_nan_price_is_stored_missing_and_imputed_with_indicator():
    data = yaml.safe_load(open(SPEC.source))
    data["item"]["listed_at"] = "column"
    data["item"]["features"].append({"name": "price", "kind": "numeric", "log": True})
    spec = parse_spec(data)

    def frame(rows, cols):
        df = pd.DataFrame(rows, columns=cols)
        return df.assign(_source="f", _line=range(1, len(df) + 1), _raw="r")

    items = frame(
        [["1", "A", "Drama", "1990", "1990s", "12.5", "2020-01-01"], ["2", "B", "Drama", "1991", "1990s", "NaN", "2020-01-02"],
         ["3", "C", "Drama", "1992", "1990s", "", "2020-01-03"]],
        ["item_id", "title", "genres", "year", "decade", "price", "listed_at"],
    )
    users = frame([["1", "18-24", "M", "x", "1"]], ["user_id", "age_band", "gender", "occupation", "zip_prefix"])
    events = frame([["1", "1", "5", "1577840000", "rating", ""]], ["user_id", "item_id", "value", "ts", "kind", "label"])
    canonical = validate(RawTables(items, users, events, value_range=(1, 5), label_threshold=4), spec)
    stored = canonical.items.to_pandas().set_index("item_id")["price"]
    assert stored.loc[1] == 12.5 and pd.isna(stored.loc[2]) and pd.isna(stored.loc[3])
    assert canonical.counts["items"] == {"read": 3, "accepted": 3, "quarantined": 0}
    encoder = FeatureEncoder.fit(spec, canonical.items.to_pandas(), canonical.users.to_pandas())
    encoded = encoder.encode(canonical.items.to_pandas(), "item")["price"]
    assert encoded[:, 1].tolist() == [0.0, 1.0, 1.0]  # the missing flag
    assert encoded[1, 0] == 0.0 and np.isfinite(encoded).all()
