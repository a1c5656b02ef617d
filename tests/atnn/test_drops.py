"""Daily drops on the example shop: append, idempotence, conflicts, statistics, what ranking ranks."""

import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from atnn import drops, pipeline
from atnn.canonical import IngestError
from atnn.config import load_settings
from atnn.readers import FormatError
from atnn.spec import load_spec
from atnn.warehouse import read_sql

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop"
SPEC = load_spec(EXAMPLE / "spec.yaml")
DROP = "2024-03-15"
TABLES = {"items": "item_id", "users": "user_id", "events": "ts, user_id, item_id, kind", "item_stats": "item_id",
          "quarantine": "source_file, line", "drops": "drop_id", "drop_items": "drop_id, item_id", "ingest_runs": "run_id"}


@pytest.fixture
def shop(tmp_path):
    """A copy of the example folder (base files + drops/2024-03-15) and settings in a temp home."""
    folder = tmp_path / "shop"
    shutil.copytree(EXAMPLE, folder)
    settings = load_settings(profile="test", dataset=str(folder / "spec.yaml"), home=tmp_path / "home")
    return folder, settings


def _snapshot(db: Path, tables=tuple(TABLES)) -> dict[str, pd.DataFrame]:
    return {t: read_sql(db, f"SELECT * FROM {t} ORDER BY {TABLES[t]}") for t in tables}


CANONICAL = ("items", "users", "events", "item_stats")


def test_drop_appends_and_updates_touched_statistics(shop):
    folder, settings = shop
    pipeline.ingest(settings, SPEC, raw_dir=folder)
    before = _snapshot(settings.paths.db, CANONICAL)
    report = drops.ingest_drop(settings, SPEC, folder / "drops" / DROP)
    assert report.reconciles() and not report.already_ingested and report.ds == DROP
    assert report.counts == {
        "items": {"read": 3, "accepted": 3, "quarantined": 0},
        "users": {"read": 1, "accepted": 1, "quarantined": 0},
        "events": {"read": 4, "accepted": 4, "quarantined": 0},
    }
    after = _snapshot(settings.paths.db)
    assert len(after["items"]) == 15 and len(after["users"]) == 9 and len(after["events"]) == 34
    # Touched: the 3 new items, and p10 and p11 (listed 03-12) whose 7-day windows hold drop events.
    assert report.touched_items == 5
    stats = after["item_stats"].set_index("item_id")
    assert stats.loc["p10", "pv"] == 1 and stats.loc["p10", "n_click"] == 1 and stats.loc["p11", "pv"] == 1
    assert stats.loc["p13", "pv"] == 1 and stats.loc["p14", "positives"] == 0
    old = before["item_stats"].set_index("item_id").drop(index=["p10", "p11"])
    # Untouched items keep their counts; pos_rate moves with the prior (the mean over all windows).
    pd.testing.assert_frame_equal(old.drop(columns="pos_rate"), stats.loc[old.index].drop(columns="pos_rate"))
    prior = stats["positives"].sum() / stats["pv"].sum()
    assert stats.loc["p01", "pos_rate"] == pytest.approx((3 + 10 * prior) / (4 + 10))
    # The Parquet sources of the feature views were re-exported.
    assert len(pd.read_parquet(settings.paths.canonical_dir / "items.parquet")) == 15


def test_same_drop_twice_changes_nothing(shop):
    folder, settings = shop
    pipeline.ingest(settings, SPEC, raw_dir=folder)
    drops.ingest_drop(settings, SPEC, folder / "drops" / DROP)
    first = _snapshot(settings.paths.db)
    again = drops.ingest_drop(settings, SPEC, folder / "drops" / DROP)
    assert again.already_ingested and again.counts["items"]["read"] == 3
    second = _snapshot(settings.paths.db)
    for table in TABLES:
        pd.testing.assert_frame_equal(first[table], second[table], obj=table)


def test_drops_equal_one_full_load(shop, tmp_path):
    """Base + drop gives the same tables as loading the base and the drop's rows in one go."""
    folder, settings = shop
    pipeline.ingest(settings, SPEC, raw_dir=folder)
    drops.ingest_drop(settings, SPEC, folder / "drops" / DROP)
    merged = tmp_path / "merged"
    merged.mkdir()
    for name in ("items", "users", "events"):
        base = (folder / f"{name}.csv").read_text()
        extra = (folder / "drops" / DROP / f"{name}.csv").read_text().split("\n", 1)[1]
        (merged / f"{name}.csv").write_text(base + extra)
    full = load_settings(profile="test", dataset=settings.dataset, home=tmp_path / "full")
    pipeline.ingest(full, SPEC, raw_dir=merged)
    for table in ("items", "users", "events", "item_stats"):
        key = TABLES[table]
        a = read_sql(full.paths.db, f"SELECT * FROM {table} ORDER BY {key}")
        b = read_sql(settings.paths.db, f"SELECT * FROM {table} ORDER BY {key}")
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=table)


def test_changed_drop_keeps_stored_rows_and_quarantines_conflicts(shop):
    folder, settings = shop
    pipeline.ingest(settings, SPEC, raw_dir=folder)
    day = folder / "drops" / DROP
    drops.ingest_drop(settings, SPEC, day)
    # The same drop exported again with p15's price changed, one more event, and an unknown user.
    items = (day / "items.csv").read_text().replace("Denim jacket,fashion,spring,Weave,s-103,79.00", "Denim jacket,fashion,spring,Weave,s-103,69.00")
    (day / "items.csv").write_text(items)
    with (day / "events.csv").open("a") as f:
        f.write("u02,p15,2024-03-15T18:00:00Z,click,1,,mobile\n")
        f.write("u99,p13,2024-03-15T19:00:00Z,click,1,,mobile\n")
    report = drops.ingest_drop(settings, SPEC, day, max_bad_share=1.0)
    assert not report.already_ingested and report.reconciles()
    assert report.counts["items"] == {"read": 3, "accepted": 2, "quarantined": 1}
    assert report.unchanged == {"items": 2, "users": 1, "events": 4}
    assert report.counts["events"] == {"read": 6, "accepted": 5, "quarantined": 1}
    q = read_sql(settings.paths.db, "SELECT table_name, line, reason FROM quarantine ORDER BY table_name, line")
    assert q.values.tolist() == [
        ["events", 7, "unknown user_id"],
        ["items", 4, "item_id already ingested with a different profile"],
    ]
    assert read_sql(settings.paths.db, "SELECT price FROM items WHERE item_id = 'p15'")["price"].tolist() == [79.0]
    assert read_sql(settings.paths.db, "SELECT count(*) AS n FROM events")["n"].iloc[0] == 35  # one new event


def test_too_many_bad_rows_in_a_drop_writes_nothing(shop):
    folder, settings = shop
    pipeline.ingest(settings, SPEC, raw_dir=folder)
    before = _snapshot(settings.paths.db, CANONICAL)
    day = folder / "drops" / DROP
    (day / "events.csv").write_text((day / "events.csv").read_text().replace("u01,p10", "u77,p10"))
    with pytest.raises(IngestError, match=r"events: 1 of 4 rows \(25\.0%\) failed validation"):
        drops.ingest_drop(settings, SPEC, day)
    after = _snapshot(settings.paths.db, CANONICAL)
    for table in CANONICAL:
        pd.testing.assert_frame_equal(before[table], after[table], obj=table)


def test_ranking_a_drop_ranks_exactly_its_items(shop):
    folder, settings = shop
    pipeline.ingest(settings, SPEC, raw_dir=folder)
    with pytest.raises(drops.DropNotIngested, match="run `atnn ingest --drop"):
        drops.drop_to_rank(settings.paths.db, folder / "drops" / DROP, None)
    # A folder of drops: every drop in it, in date order; ranking picks the one of the date asked.
    reports = [drops.ingest_drop(settings, SPEC, f) for f in drops.drop_folders(folder / "drops")]
    assert [r.ds for r in reports] == [DROP]
    record, arrivals = drops.drop_to_rank(settings.paths.db, folder / "drops", date(2024, 3, 15))
    assert record.ds == date(2024, 3, 15) and arrivals["item_id"].tolist() == ["p13", "p14", "p15"]
    with pytest.raises(ValueError, match="is the drop of 2024-03-15, not of 2024-03-16"):
        drops.drop_to_rank(settings.paths.db, folder / "drops" / DROP, date(2024, 3, 16))
    with pytest.raises(FormatError, match="no drop for 2024-03-16"):
        drops.drop_to_rank(settings.paths.db, folder / "drops", date(2024, 3, 16))
    window = drops.materialize_window(SPEC, reports)
    assert window == (pd.Timestamp("2024-03-07").to_pydatetime(), pd.Timestamp("2024-03-24").to_pydatetime())


def test_drop_day_without_a_date_name_is_its_newest_arrival(shop):
    folder, settings = shop
    pipeline.ingest(settings, SPEC, raw_dir=folder)
    renamed = folder / "drops" / "latest"
    (folder / "drops" / DROP).rename(renamed)
    assert drops.ingest_drop(settings, SPEC, renamed).ds == DROP


def test_a_new_base_load_makes_old_drop_records_stale(shop):
    folder, settings = shop
    pipeline.ingest(settings, SPEC, raw_dir=folder)
    drops.ingest_drop(settings, SPEC, folder / "drops" / DROP)
    pipeline.ingest(settings, SPEC, raw_dir=folder)  # the tables are replaced by the base alone
    report = drops.ingest_drop(settings, SPEC, folder / "drops" / DROP)
    assert not report.already_ingested and report.unchanged["items"] == 0
    assert read_sql(settings.paths.db, "SELECT count(*) AS n FROM items")["n"].iloc[0] == 15
