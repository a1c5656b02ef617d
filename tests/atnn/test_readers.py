"""Readers on the real files (row counts, encodings) and on broken files (clear errors)."""

from pathlib import Path

import pytest

from atnn.readers import FormatError, age_band, read_delimited, read_raw, split_title_year
from atnn.spec import load_spec


def test_ml100k_real_files_row_counts(real_data_dir: Path):
    raw = read_raw(load_spec("ml-100k"), real_data_dir / "ml-100k")
    assert len(raw.events) == 100_000
    assert len(raw.users) == 943
    assert len(raw.items) == 1_682
    assert raw.rejected.empty


def test_ml100k_item_file_is_read_as_latin1(real_data_dir: Path):
    raw = read_raw(load_spec("ml-100k"), real_data_dir / "ml-100k")
    titles = set(raw.items["title"])
    # u.item is latin-1: accented titles decode to the right characters.
    assert any("é" in t for t in titles)
    first = raw.items.iloc[0]
    assert (first["title"], first["year"], first["decade"]) == ("Toy Story", "1995", "1990s")
    assert first["genres"] == "Animation|Children's|Comedy"


def test_ml_latest_small_real_files(real_data_dir: Path):
    raw = read_raw(load_spec("ml-latest-small"), real_data_dir / "ml-latest-small")
    assert len(raw.items) == 9_742  # movies.csv rows; validation keeps the 9,724 with ratings
    assert len(raw.events) >= 100_836
    assert raw.users_derived


def test_missing_file_names_the_file(tmp_path: Path):
    with pytest.raises(FormatError, match=r"u\.genre: file not found"):
        read_raw(load_spec("ml-100k"), tmp_path)


def test_wrong_separator_is_a_format_error(tmp_path: Path):
    path = tmp_path / "u.data"
    path.write_text("1,2,3,881250949\n4,5,3,881250949\n")
    with pytest.raises(FormatError, match=r"u\.data: only 0 of 2 lines have the expected 4 fields"):
        read_delimited(path, ["user_id", "item_id", "value", "ts"], "events", sep="\t")


def test_empty_file_is_a_format_error(tmp_path: Path):
    path = tmp_path / "u.user"
    path.write_text("")
    with pytest.raises(FormatError, match="is empty"):
        read_delimited(path, ["a"], "users", sep="|")


def test_wrong_encoding_names_file_and_line(tmp_path: Path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.0,96498\xe9703\n")
    with pytest.raises(FormatError, match=r"ratings\.csv: not valid utf-8 .*line 3"):
        read_delimited(path, ["a", "b", "c", "d"], "events", sep=",", header=["userId", "movieId", "rating", "timestamp"])


def test_bad_lines_are_kept_with_reason(tmp_path: Path):
    path = tmp_path / "u.data"
    path.write_text("1\t2\t3\t881250949\n1\t2\n4\t5\t3\t881250950\n")
    parsed = read_delimited(path, ["user_id", "item_id", "value", "ts"], "events", sep="\t")
    assert list(parsed.rows["_line"]) == [1, 3]
    assert parsed.rejected.iloc[0]["_line"] == 2
    assert "expected 4 fields" in parsed.rejected.iloc[0]["reason"]


@pytest.mark.parametrize(
    "title, expected",
    [("Toy Story (1995)", ("Toy Story", "1995")), ("unknown", ("unknown", "")), ("Se7en (1995) ", ("Se7en", "1995"))],
)
def test_split_title_year(title, expected):
    assert split_title_year(title) == expected


@pytest.mark.parametrize("age, band", [("7", "under18"), ("18", "18-24"), ("56", "56+"), ("x", ""), ("0", "")])
def test_age_band(age, band):
    assert age_band(age) == band
