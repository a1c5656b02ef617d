"""ML-100K as a base load plus one daily drop for each of its last 30 days equals one full load:
the same canonical tables and statistics, and the same rankings from the same exported model."""

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from atnn import drops, pipeline, store
from atnn.config import load_settings
from atnn.readers import read_raw
from atnn.spec import load_spec
from atnn.warehouse import read_sql

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SPEC = load_spec("ml-100k")
DAYS = 30


def split_ml100k(source: Path, out: Path, days: int = DAYS) -> tuple[Path, list[Path], datetime]:
    """The raw ML-100K files cut at the start of its last `days` days (UTC), and one canonical drop
    folder per day after that: the items and users whose first rating falls on it, and its ratings."""
    raw = read_raw(SPEC, source)
    events = raw.events.assign(t=raw.events["ts"].astype(int))
    day_of = events["t"].map(lambda t: datetime.fromtimestamp(t, tz=timezone.utc).date())
    events = events.assign(day=day_of)
    first_day = events["day"].max() - timedelta(days=days - 1)
    cut = datetime(first_day.year, first_day.month, first_day.day)
    cut_ts = int(cut.replace(tzinfo=timezone.utc).timestamp())
    item_day = events.groupby("item_id")["day"].min()
    user_day = events.groupby("user_id")["day"].min()

    base = out / "base"
    base.mkdir(parents=True)
    shutil.copy(source / "u.genre", base / "u.genre")
    old_items = set(item_day[item_day < first_day].index)
    old_users = set(user_day[user_day < first_day].index)
    lines = (source / "u.item").read_bytes().decode("latin-1").splitlines(keepends=True)
    (base / "u.item").write_bytes("".join(x for x in lines if x.split("|", 1)[0] in old_items).encode("latin-1"))
    lines = (source / "u.user").read_text().splitlines(keepends=True)
    (base / "u.user").write_text("".join(x for x in lines if x.split("|", 1)[0] in old_users))
    lines = (source / "u.data").read_text().splitlines(keepends=True)
    (base / "u.data").write_text("".join(x for x in lines if int(x.split("\t")[3]) < cut_ts))

    items = raw.items.set_index("item_id")
    users = raw.users.set_index("user_id")
    folders = []
    for i in range(days):
        day = first_day + timedelta(days=i)
        folder = out / "drops" / day.isoformat()
        folder.mkdir(parents=True)
        # Canonical files; events carry the rating as `value` and no label: the spec's rule applies.
        items.loc[item_day.index[item_day == day], ["title", "genres", "year", "decade"]].reset_index().to_csv(folder / "items.csv", index=False)
        users.loc[user_day.index[user_day == day], ["age_band", "gender", "occupation", "zip_prefix"]].reset_index().to_csv(folder / "users.csv", index=False)
        events.loc[events["day"] == day, ["user_id", "item_id", "ts", "kind", "value"]].to_csv(folder / "events.csv", index=False)
        folders.append(folder)
    return base, folders, cut


@pytest.fixture(scope="module")
def homes(tmp_path_factory, real_data_dir):
    root = tmp_path_factory.mktemp("ml-drops")
    base, folders, cut = split_ml100k(real_data_dir / "ml-100k", root / "data")
    full = load_settings(profile="test", dataset="ml-100k", home=root / "full", onnx_dir=root / "onnx")
    daily = load_settings(profile="test", dataset="ml-100k", home=root / "daily", onnx_dir=root / "onnx")
    pipeline.ingest(full, SPEC, raw_dir=real_data_dir / "ml-100k")
    pipeline.ingest(daily, SPEC, raw_dir=base)
    reports = [drops.ingest_drop(daily, SPEC, folder) for folder in folders]
    return full, daily, folders, reports, cut


def test_every_drop_reconciles(homes):
    _, daily, folders, reports, _ = homes
    assert [r.ds for r in reports] == [f.name for f in folders]
    assert all(r.reconciles() and not r.already_ingested for r in reports)
    assert sum(r.counts["events"]["accepted"] for r in reports) == read_sql(
        daily.paths.db, "SELECT count(*) AS n FROM events WHERE ts >= ?", [homes[4]])["n"].iloc[0]
    assert sum(r.new_items for r in reports) > 0


@pytest.mark.parametrize(
    "table, key",
    [("items", "item_id"), ("users", "user_id"), ("events", "ts, user_id, item_id, kind"), ("item_stats", "item_id"), ("quarantine", "table_name, line")],
)
def test_same_tables_as_one_full_load(homes, table, key):
    full, daily, *_ = homes
    a = read_sql(full.paths.db, f"SELECT * FROM {table} ORDER BY {key}")
    b = read_sql(daily.paths.db, f"SELECT * FROM {table} ORDER BY {key}")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for name in ("items", "users", "item_stats"):  # and the same Feast sources
        pd.testing.assert_frame_equal(
            pd.read_parquet(full.paths.canonical_dir / f"{name}.parquet"),
            pd.read_parquet(daily.paths.canonical_dir / f"{name}.parquet"),
            check_exact=True,
        )


def test_same_rankings_from_the_same_model(homes):
    full, daily, folders, _, cut = homes
    for settings in (full, daily):
        store.apply(settings, SPEC)

    def reader(settings):
        return lambda entities, service: store.historical_features(settings, SPEC, entities, service)

    # One model, trained on what the full load knew before the first drop's day. Its quality does
    # not matter here, only that both warehouses rank with it: one epoch of large batches.
    frame = reader(full)(pipeline.training_entities(full.paths.db, SPEC, cut), "atnn_training")
    quick = full.with_overrides(**{"train.epochs": 1, "train.batch_size": 4096})
    model = Path(pipeline.train_and_export(quick, SPEC, frame, as_of=cut).onnx_path).parent
    ranked_days = 0
    for folder in folders:
        record, arrivals = drops.drop_to_rank(daily.paths.db, folder, None)
        by_day = pipeline.rank_day(full, SPEC, record.ds, reader(full), model_dir=model)
        by_drop = pipeline.rank_day(daily, SPEC, record.ds, reader(daily), model_dir=model, arrivals=arrivals)
        assert by_drop.new_arrivals == by_day.new_arrivals == len(arrivals)
        ranked_days += by_day.ranked > 0
    columns = "ds, item_id, score, rank, model_version, title, category, listed_at"
    a = read_sql(full.paths.db, f"SELECT {columns} FROM rankings ORDER BY ds, rank")
    b = read_sql(daily.paths.db, f"SELECT {columns} FROM rankings ORDER BY ds, rank")
    assert len(a) == sum(r.new_items for r in homes[3]) and ranked_days >= 10
    pd.testing.assert_frame_equal(a, b, check_exact=True)
