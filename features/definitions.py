"""Feast definitions of atnn, derived from the dataset's feature spec.

Entity -> Source -> FeatureView -> FeatureService, in that order. The columns of every view come from
the spec (ATNN_SPEC: a shipped spec name or a YAML path), so this file names no dataset's column. The
Parquet sources are the canonical tables written by `atnn ingest` into ATNN_FEAST_DATA.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, String, UnixTimestamp

from atnn.spec import load_spec

spec = load_spec(os.environ.get("ATNN_SPEC", "ml-100k"))
data = Path(os.environ.get("ATNN_FEAST_DATA", "var/canonical")).resolve()
id_value_type = ValueType.INT64 if spec.id_type == "int64" else ValueType.STRING
FEAST_TYPES = {"numeric": Float64, "timestamp": UnixTimestamp}


def _fields(features):
    return [Field(name=f.name, dtype=FEAST_TYPES.get(f.kind, String)) for f in features if f.name != "user_id"]


item = Entity(name="item", join_keys=["item_id"], value_type=id_value_type, description="a catalogue item")
user = Entity(name="user", join_keys=["user_id"], value_type=id_value_type, description="a buyer")

item_profile_source = FileSource(
    name="item_profile_source", path=str(data / "items.parquet"), timestamp_field="listed_at"
)
item_stats_source = FileSource(
    name="item_stats_source", path=str(data / "item_stats.parquet"), timestamp_field="stats_ts"
)
user_profile_source = FileSource(
    name="user_profile_source", path=str(data / "users.parquet"), timestamp_field="registered_at"
)

# Profiles never expire (ttl 0): an item's profile is known from its arrival on.
item_profile = FeatureView(
    name="item_profile",
    entities=[item],
    ttl=timedelta(0),
    schema=_fields(spec.item_features),
    source=item_profile_source,
    description="what a new arrival has: its profile, known from listed_at",
)
# Known only once the item's first window has closed (stats_ts = listed_at + window).
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(0),
    schema=[Field(name=s, dtype=Float64) for s in spec.stats],
    source=item_stats_source,
    description=f"statistics of the item's first {spec.stats_window_days} days (pv, uv, positives, ...)",
)
user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(0),
    schema=_fields(spec.user_features) or [Field(name="registered_at", dtype=UnixTimestamp)],
    source=user_profile_source,
    description="the buyer's profile",
)

atnn_training = FeatureService(
    name="atnn_training",
    features=[item_profile, item_stats, user_profile],
    description="rows for Algorithm 1: item profile + statistics (encoder), profile (generator), user",
)
atnn_ranking = FeatureService(
    name="atnn_ranking",
    features=[item_profile],
    description="what the generator reads to rank new arrivals",
)
