"""Validation into canonical tables (every row accepted or quarantined) and item statistics in SQL."""

import duckdb
import pandas as pd
import pytest

from atnn.canonical import IngestError, item_stats_sql, validate
from atnn.readers import RawTables
from atnn.spec import load_spec

SPEC = load_spec("ml-100k")


def _raw(events, items=None, users=None) -> RawTables:
    items = items if items is not None else [["1", "A", "Comedy", "1990", "1990s"], ["2", "B", "Drama", "", ""]]
    users = users if users is not None else [["1", "18-24", "M", "student", "1"], ["2", "25-34", "F", "artist", "9"]]

    def frame(rows, cols, name):
        df = pd.DataFrame(rows, columns=cols)
        df["_source"] = name
        df["_line"] = range(1, len(df) + 1)
        df["_raw"] = ["|".join(r) for r in rows]
        return df

    return RawTables(
        items=frame(items, ["item_id", "title", "genres", "year", "decade"], "u.item"),
        users=frame(users, ["user_id", "age_band", "gender", "occupation", "zip_prefix"], "u.user"),
        events=frame([[*e, "rating", ""] for e in events], ["user_id", "item_id", "value", "ts", "kind", "label"], "u.data"),
        value_range=(1, 5),
        label_threshold=4,
    )


def test_good_rows_are_accepted_and_typed():
    c = validate(_raw([["1", "1", "5", "881250949"], ["2", "1", "2", "881250950"], ["1", "2", "4", "881350949"]]), SPEC)
    assert c.counts["events"] == {"read": 3, "accepted": 3, "quarantined": 0}
    events = c.events.to_pandas()
    assert list(events["label"]) == [1, 0, 1]
    items = c.items.to_pandas().set_index("item_id")
    # listed_at is the first event time.
    assert items.loc[1, "listed_at"] == pd.Timestamp(881250949, unit="s")
    assert pd.isna(items.loc[2, "year"])  # missing numeric stays missing (imputed later)


@pytest.mark.parametrize(
    "event, reason",
    [
        (["x", "1", "5", "881250949"], "unparseable user_id"),
        (["1", "1", "5", "yesterday"], "unparseable timestamp"),
        (["1", "1", "5", "-5"], "timestamp out of range"),
        (["1", "1", "9", "881250949"], "value out of range [1, 5]"),
        (["3", "1", "5", "881250949"], "unknown user_id"),
        (["1", "99", "5", "881250949"], "unknown item_id"),
    ],
)
def test_bad_event_goes_to_quarantine_with_reason(event, reason):
    good = [["1", "1", "5", "881250949"], ["2", "2", "4", "881250999"]] + [["1", "2", "4", str(881260000 + i)] for i in range(40)]
    c = validate(_raw(good + [event]), SPEC)
    q = c.quarantine
    assert list(q["reason"]) == [reason]
    assert q.iloc[0]["line"] == len(good) + 1
    counts = c.counts["events"]
    assert counts["read"] == counts["accepted"] + counts["quarantined"] == len(good) + 1


def test_duplicate_event_keeps_first():
    rows = [["1", "1", "5", "881250949"], ["1", "1", "5", "881250949"]] + [["2", "2", "4", str(881260000 + i)] for i in range(40)]
    c = validate(_raw(rows), SPEC)
    assert list(c.quarantine["reason"]) == ["duplicate event (user_id, item_id, ts, kind)"]
    assert c.quarantine.iloc[0]["line"] == 2


def test_missing_required_user_field_and_duplicate_item():
    users = [["1", "18-24", "M", "student", "1"], ["2", "", "F", "artist", "9"]]
    items = [["1", "A", "Comedy", "1990", "1990s"], ["1", "A again", "Drama", "1991", "1990s"], ["2", "B", "Drama", "", ""]]
    c = validate(_raw([["1", "1", "5", "881250949"], ["1", "2", "5", "881250950"]], items, users), SPEC, max_bad_share=1.0)
    reasons = dict(zip(c.quarantine["table_name"], c.quarantine["reason"]))
    assert reasons["users"] == "missing required field age_band"
    assert reasons["items"] == "duplicate item_id"


def test_too_many_bad_rows_refuses_the_ingest():
    rows = [["1", "1", "5", "881250949"], ["1", "99", "5", "881250950"], ["1", "98", "5", "881250951"]]
    with pytest.raises(IngestError, match=r"events: 2 of 3 rows .* failed validation .*first at u\.data lines 2, 3\)"):
        validate(_raw(rows), SPEC, max_bad_share=0.5)


def test_item_stats_sql_first_window_by_hand():
    items = pd.DataFrame({"item_id": [1, 2], "listed_at": pd.to_datetime(["2020-01-01", "2020-01-10"])})
    events = pd.DataFrame(
        {
            "user_id": [1, 2, 2, 3, 1],
            "item_id": [1, 1, 1, 1, 2],
            "ts": pd.to_datetime(["2020-01-01", "2020-01-05", "2020-01-20", "2020-02-15", "2020-01-10"]),
            "kind": ["rating"] * 5,
            "label": [1, 0, 1, 1, 0],
            "value": [5.0, 2.0, 4.0, 5.0, 1.0],
        }
    )
    con = duckdb.connect()
    con.register("items", items)
    con.register("events", events)
    stats = con.execute(item_stats_sql(SPEC, prior_events=10)).df().set_index("item_id")
    # Item 1: three events inside its 30 days (the 2020-02-15 one is outside), two users, two positives.
    assert stats.loc[1, ["pv", "uv", "positives"]].tolist() == [3.0, 2.0, 2.0]
    prior = 2 / 4  # positives / events over all windows
    assert stats.loc[1, "pos_rate"] == pytest.approx((2 + 10 * prior) / (3 + 10))
    assert stats.loc[1, "value_mean"] == pytest.approx((5 + 2 + 4) / 3)
    assert stats.loc[2, "stats_ts"] == pd.Timestamp("2020-02-09")
