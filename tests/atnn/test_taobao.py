"""The Taobao display-ad reader and spec on hand-written rows in the dataset's exact file formats."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from atnn import pipeline
from atnn.canonical import IngestError
from atnn.config import load_settings
from atnn.readers import FormatError, read_raw
from atnn.spec import load_spec
from atnn.warehouse import read_sql

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "taobao"
SPEC = load_spec("taobao")


@pytest.fixture
def loaded(tmp_path):
    settings = load_settings(profile="test", dataset="taobao", home=tmp_path / "home")
    report = pipeline.ingest(settings, SPEC, raw_dir=FIXTURE, max_bad_share=0.5)
    return settings, report


def test_reader_handles_header_space_empty_cells_and_null_brand():
    raw = read_raw(SPEC, FIXTURE)
    assert list(raw.users.columns[:9]) == ["user_id", *[f.name for f in SPEC.user_features]]
    user = raw.users.set_index("user_id")
    assert user.loc["11", "pvalue_level"] == "" and user.loc["12", "new_user_class_level"] == ""
    assert user.loc["11", "new_user_class_level"] == "3"  # the column under the header with a trailing space
    assert raw.items.set_index("item_id").loc["103", "brand"] == ""  # NULL in the file
    kinds = raw.events.set_index("_line")["kind"]
    assert kinds[2] == "impression" and kinds[3] == "click"
    assert list(raw.rejected["reason"]) == ["clk and nonclk must be 0/1 and sum to 1"]
    assert list(raw.rejected["_line"]) == [8]


def test_statistics_by_hand(loaded):
    settings, _ = loaded
    db = settings.paths.db
    items = read_sql(db, "SELECT item_id, listed_at, brand FROM items ORDER BY item_id")
    # An ad arrives at its first impression (2017-05-06 01:00 UTC for ad 101).
    assert items["listed_at"].iloc[0] == pd.Timestamp("2017-05-06 01:00:00")
    assert pd.isna(items["brand"].iloc[2])
    stats = read_sql(db, "SELECT * FROM item_stats ORDER BY item_id").set_index("item_id")
    # Ad 101, window [05-06 01:00, 05-09 01:00): three impressions (one click); behaviours on
    # (6261, 9001): a cart inside, a fav inside, a buy after the window, a cart before arrival.
    assert stats.loc[101, ["pv", "uv", "positives", "n_cart", "n_fav", "n_buy"]].tolist() == [3, 3, 1, 1, 1, 0]
    # Ad 102 (6261, 9002): a click and an impression from user 14, who has no profile; a buy inside,
    # and a pv, which no statistic counts.
    assert stats.loc[102, ["pv", "positives", "n_cart", "n_fav", "n_buy"]].tolist() == [2, 1, 0, 0, 1]
    # Ad 103 has no brand: behaviours on (4520, NULL) match no ad.
    assert stats.loc[103, ["pv", "n_cart"]].tolist() == [1, 0]
    assert stats.loc[101, "stats_ts"] == pd.Timestamp("2017-05-09 01:00:00")  # the 3-day window of the spec
    prior = 3 / 7  # clicks / impressions over all windows
    assert stats.loc[101, "pos_rate"] == pytest.approx((1 + 10 * prior) / (3 + 10))


def test_every_row_accepted_or_quarantined(loaded):
    settings, report = loaded
    assert report.counts["events"] == {"read": 9, "accepted": 7, "quarantined": 2}
    assert report.counts["behaviors"] == {"read": 8, "accepted": 7, "quarantined": 1}
    assert report.reconciles()
    quarantine = read_sql(settings.paths.db, "SELECT table_name, line, reason FROM quarantine ORDER BY table_name, line")
    assert quarantine.values.tolist() == [
        ["behaviors", 8, "unparseable timestamp"],
        ["events", 8, "clk and nonclk must be 0/1 and sum to 1"],
        ["events", 9, "unknown item_id"],
    ]
    users = read_sql(settings.paths.db, "SELECT user_id, final_gender_code FROM users ORDER BY user_id")
    # User 14 has impressions but no profile row: kept (unknown_users: keep) with an empty profile.
    assert users["user_id"].tolist() == [11, 12, 13, 14] and pd.isna(users["final_gender_code"].iloc[3])
    pids = read_sql(settings.paths.db, "SELECT DISTINCT pid FROM events ORDER BY pid")["pid"].tolist()
    assert pids == ["430539_1007", "430548_1007"]  # the event-side column is stored


def test_share_of_bad_rows_is_enforced(tmp_path):
    settings = load_settings(profile="test", dataset="taobao", home=tmp_path / "home")
    with pytest.raises(IngestError, match=r"events: 2 of 9 rows \(22\.2%\) failed validation .*Above the allowed share of 20\.0%"):
        pipeline.ingest(settings, SPEC, raw_dir=FIXTURE, max_bad_share=0.2)
    assert not settings.paths.db.exists()  # nothing was written


def test_wrong_header_names_file_and_expected_columns(tmp_path):
    folder = tmp_path / "taobao"
    shutil.copytree(FIXTURE, folder)
    text = (folder / "ad_feature.csv").read_text().replace("cate_id,campaign_id", "campaign_id,cate_id", 1)
    (folder / "ad_feature.csv").write_text(text)
    with pytest.raises(FormatError, match=r"ad_feature\.csv: header is .*expected \['adgroup_id', 'cate_id'"):
        read_raw(SPEC, folder)


def test_behavior_log_is_required_by_the_spec(tmp_path):
    folder = tmp_path / "taobao"
    shutil.copytree(FIXTURE, folder)
    (folder / "behavior_log.csv").unlink()
    with pytest.raises(FormatError, match=r"behavior_log\.csv: file not found"):
        read_raw(SPEC, folder)
