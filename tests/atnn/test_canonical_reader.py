"""The canonical input format: the example folder, CSV and Parquet alike, and clear errors."""

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atnn.canonical import validate
from atnn.readers import FormatError, read_canonical, read_raw
from atnn.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop"
SPEC = load_spec(EXAMPLE / "spec.yaml")


@pytest.fixture
def shop(tmp_path) -> Path:
    folder = tmp_path / "shop"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("drops"))
    return folder


def test_example_folder_is_fifty_rows_all_accepted():
    canonical = validate(read_raw(SPEC, EXAMPLE), SPEC)
    assert {t: c["read"] for t, c in canonical.counts.items()} == {"items": 12, "users": 8, "events": 30}
    assert all(c["quarantined"] == 0 for c in canonical.counts.values())
    items = canonical.items.to_pandas().set_index("item_id")
    assert items.loc["p04", "title"] == "Linen shirt, short sleeve"  # a quoted comma
    assert items.loc["p01", "listed_at"] == pd.Timestamp("2024-03-01 08:00:00")  # ISO with Z, stored in UTC
    assert pd.isna(items.loc["p08", "stock"])
    events = canonical.events.to_pandas()
    assert set(events["kind"]) == {"impression", "click", "cart", "buy"}
    assert events["device"].notna().all()  # the event-side column is stored
    users = canonical.users.to_pandas().set_index("user_id")
    assert users.loc["u01", "signed_up_at"] == pd.Timestamp("2023-05-02")


def _to_parquet(folder: Path) -> None:
    """Rewrite the example's CSV files as Parquet with native types (timestamps, floats, lists)."""
    items = pd.read_csv(folder / "items.csv", dtype={"item_id": str, "seller": str})
    items["listed_at"] = pd.to_datetime(items["listed_at"], utc=True)
    items["tags"] = items["tags"].str.split("|")
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), folder / "items.parquet")
    users = pd.read_csv(folder / "users.csv", dtype=str)
    users["signed_up_at"] = pd.to_datetime(users["signed_up_at"])
    users["city_tier"] = users["city_tier"].astype(int)  # an int column, read as its text
    pq.write_table(pa.Table.from_pandas(users, preserve_index=False), folder / "users.parquet")
    events = pd.read_csv(folder / "events.csv", dtype={"user_id": str, "item_id": str})
    events["ts"] = pd.to_datetime(events["ts"], utc=True).dt.tz_convert("Asia/Shanghai")  # offsets are honoured
    events["label"] = events["label"].astype(bool)
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), folder / "events.parquet")
    for name in ("items", "users", "events"):
        (folder / f"{name}.csv").unlink()


def test_parquet_gives_the_same_tables_as_csv(shop):
    from_csv = validate(read_canonical(shop, SPEC), SPEC)
    _to_parquet(shop)
    from_parquet = validate(read_canonical(shop, SPEC), SPEC)
    for table in ("items", "users", "events"):
        pd.testing.assert_frame_equal(getattr(from_csv, table).to_pandas(), getattr(from_parquet, table).to_pandas())
    assert from_parquet.quarantine.empty


def test_missing_column_names_file_and_column(shop):
    items = pd.read_csv(shop / "items.csv", dtype=str).drop(columns="brand")
    items.to_csv(shop / "items.csv", index=False)
    with pytest.raises(FormatError, match=r"items\.csv: missing column\(s\) \['brand'\]"):
        read_canonical(shop, SPEC)


def test_wrong_separator_and_duplicate_files_are_format_errors(shop):
    text = (shop / "users.csv").read_text()
    (shop / "users.csv").write_text(text.replace(",", ";"))
    with pytest.raises(FormatError, match=r"users\.csv: the header is separated by semicolons"):
        read_canonical(shop, SPEC)
    (shop / "users.csv").write_text(text)
    shutil.copy(shop / "users.csv", shop / "users.parquet")
    with pytest.raises(FormatError, match="both users.csv and users.parquet exist"):
        read_canonical(shop, SPEC)


def test_missing_events_file_is_a_format_error(shop):
    (shop / "events.csv").unlink()
    with pytest.raises(FormatError, match=r"missing events\.csv \(or \.parquet\)"):
        read_canonical(shop, SPEC)


def test_bad_rows_are_quarantined_with_line_numbers(shop):
    with (shop / "events.csv").open("a") as f:
        f.write("u01,p02,2024-03-09T10:00:00+08:00,view,0,,mobile\n")  # line 32: a kind the spec does not list
        f.write("u01,p02\n")  # line 33: too few fields
        f.write('u09,p02,2024-03-09T11:00:00Z,click,1,,"mobile\nphone"\n')  # lines 34-35: unknown user
    with (shop / "items.csv").open("a") as f:
        f.write("p13,2024-03-13T08:00:00Z,Pen,,office,Inky,s-108,2.5,9\n")  # line 14: missing required category
    canonical = validate(read_canonical(shop, SPEC), SPEC, max_bad_share=1.0)
    q = canonical.quarantine.sort_values(["table_name", "line"])
    assert q[["table_name", "line", "reason"]].values.tolist() == [
        ["events", 32, "unknown kind view; expected one of impression, click, cart, buy"],
        ["events", 33, "expected 7 fields (as in the header), got 2"],
        ["events", 34, "unknown user_id"],
        ["items", 14, "missing required field category"],
    ]
    assert q["raw"].iloc[2] == 'u09,p02,2024-03-09T11:00:00Z,click,1,,"mobile\nphone"'
    assert canonical.counts["events"] == {"read": 33, "accepted": 30, "quarantined": 3}


def test_iso_offset_is_converted_to_utc(shop):
    text = (shop / "items.csv").read_text().replace("2024-03-01T08:00:00Z", "2024-03-01T08:00:00+08:00")
    (shop / "items.csv").write_text(text)
    items = validate(read_canonical(shop, SPEC), SPEC).items.to_pandas().set_index("item_id")
    assert items.loc["p01", "listed_at"] == pd.Timestamp("2024-03-01 00:00:00")


def test_behaviors_file_needs_behavior_keys(shop):
    (shop / "behaviors.csv").write_text("user_id,ts,kind\nu01,2024-03-02,cart\n")
    with pytest.raises(FormatError, match="needs stats.behavior_keys in the spec"):
        read_canonical(shop, SPEC)
