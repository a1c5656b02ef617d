"""Readers: raw dataset files -> raw canonical tables (strings, with source file and line number).

A reader only parses and maps columns; it keeps every row, with its file, line and raw text, so that
validation (atnn.canonical) can accept it or quarantine it with a reason. A file that is not in the
expected format at all (missing, empty, wrong separator, wrong column count, wrong encoding) stops the
read with a `FormatError` naming the file and what was expected.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from atnn.spec import DatasetSpec


class FormatError(ValueError):
    """A whole file is not in the expected format; nothing from it was used."""


@dataclass
class RawTables:
    """String tables in canonical column names, each row with `_source`, `_line` and `_raw`.

    `rejected` holds rows the reader could not even split into fields (wrong field count);
    they reach the quarantine table with their reason.
    """

    items: pd.DataFrame
    users: pd.DataFrame
    events: pd.DataFrame
    rejected: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=REJECT_COLUMNS))
    # Range of `value` (e.g. a rating) that an event may have; outside it the row is quarantined.
    value_range: tuple[float, float] | None = None
    # When the raw events carry no label, label = value >= this threshold.
    label_threshold: float | None = None
    # True when the dataset has no user file: users are the distinct users of the accepted events.
    users_derived: bool = False


REJECT_COLUMNS = ["table_name", "_source", "_line", "_raw", "reason"]


@dataclass(frozen=True)
class _Parsed:
    rows: pd.DataFrame
    rejected: pd.DataFrame


def _decode(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise FormatError(f"{path}: file not found")
    data = path.read_bytes()
    if not data.strip():
        raise FormatError(f"{path}: file is empty")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FormatError(
            f"{path}: not valid {encoding} (byte {exc.start}, line {line}); expected {encoding}-encoded text"
        ) from exc


def read_delimited(
    path: Path,
    columns: list[str],
    table_name: str,
    *,
    sep: str,
    encoding: str = "utf-8",
    header: list[str] | None = None,
    quoted: bool = False,
    min_good_share: float = 0.5,
) -> _Parsed:
    """Split a delimited file into string columns, keeping line numbers and raw lines.

    Lines with the wrong number of fields are returned as rejected rows. If `header` is given, the
    first line must equal it. If fewer than `min_good_share` of the lines split into the expected
    number of fields, the file is in the wrong format and a FormatError is raised.
    """
    text = _decode(path, encoding)
    lines = text.splitlines()
    first = 1
    if header is not None:
        found = next(csv.reader([lines[0]], delimiter=sep)) if quoted else lines[0].split(sep)
        found = [h.strip() for h in found]
        if found != header:
            raise FormatError(
                f"{path}: header is {found!r}; expected {header!r} separated by {sep!r}"
            )
        first = 2
    body = lines[first - 1 :]
    if quoted:
        fields_per_line: Iterable[list[str]] = csv.reader(body, delimiter=sep)
    else:
        fields_per_line = (line.split(sep) for line in body)
    good: list[list[str]] = []
    bad: list[list[object]] = []
    n = len(columns)
    for offset, (raw, fields) in enumerate(zip(body, fields_per_line)):
        line_no = first + offset
        if not raw.strip():  # blank lines (a trailing newline, say) hold no row
            continue
        if len(fields) != n:
            bad.append([table_name, str(path), line_no, raw, f"expected {n} fields separated by {sep!r}, got {len(fields)}"])
            continue
        good.append([*fields, str(path), line_no, raw])
    total = len(good) + len(bad)
    if total == 0:
        raise FormatError(f"{path}: no data rows; expected lines of {n} fields ({', '.join(columns)}) separated by {sep!r}")
    if len(good) < min_good_share * total:
        raise FormatError(
            f"{path}: only {len(good)} of {total} lines have the expected {n} fields "
            f"({', '.join(columns)}) separated by {sep!r}; is this the right file and format?"
        )
    rows = pd.DataFrame(good, columns=[*columns, "_source", "_line", "_raw"])
    rejected = pd.DataFrame(bad, columns=REJECT_COLUMNS)
    return _Parsed(rows, rejected)


# ---------------------------------------------------------------- MovieLens helpers

_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")


def split_title_year(title: str) -> tuple[str, str]:
    """'Toy Story (1995)' -> ('Toy Story', '1995'); no year -> (title, '')."""
    match = _YEAR_IN_TITLE.search(title)
    if not match:
        return title.strip(), ""
    return title[: match.start()].strip(), match.group(1)


def decade_of(year: str) -> str:
    return f"{year[:3]}0s" if len(year) == 4 and year.isdigit() else ""


def age_band(age: str) -> str:
    """MovieLens-1M age bands; '' when the age is not a number in 1..120."""
    try:
        value = int(age)
    except ValueError:
        return ""
    if not 1 <= value <= 120:
        return ""
    for upper, band in ((17, "under18"), (24, "18-24"), (34, "25-34"), (44, "35-44"), (49, "45-49"), (55, "50-55")):
        if value <= upper:
            return band
    return "56+"


def _events_frame(parsed: _Parsed) -> pd.DataFrame:
    frame = parsed.rows
    frame["kind"] = "rating"
    frame["label"] = ""
    return frame[["user_id", "item_id", "ts", "kind", "label", "value", "_source", "_line", "_raw"]]


def read_movielens_100k(folder: Path) -> RawTables:
    """ML-100K: u.data (tab), u.user and u.item (pipe; u.item is latin-1), genres from u.genre."""
    genres_parsed = read_delimited(folder / "u.genre", ["genre", "index"], "genres", sep="|")
    genre_names = [g for g in genres_parsed.rows.sort_values("index", key=lambda s: s.astype(int))["genre"]]

    ratings = read_delimited(folder / "u.data", ["user_id", "item_id", "value", "ts"], "events", sep="\t")
    events = _events_frame(ratings)

    users_parsed = read_delimited(
        folder / "u.user", ["user_id", "age", "gender", "occupation", "zip"], "users", sep="|"
    )
    users = users_parsed.rows
    users["age_band"] = users["age"].map(age_band)
    users["zip_prefix"] = users["zip"].str.strip().str[:1]
    users = users[["user_id", "age_band", "gender", "occupation", "zip_prefix", "_source", "_line", "_raw"]]

    item_columns = ["item_id", "title_raw", "release_date", "video_release_date", "url", *[f"g{i}" for i in range(len(genre_names))]]
    items_parsed = read_delimited(folder / "u.item", item_columns, "items", sep="|", encoding="latin-1")
    items = items_parsed.rows
    flags = items[[f"g{i}" for i in range(len(genre_names))]].to_numpy()
    items["genres"] = ["|".join(g for g, f in zip(genre_names, row) if f == "1") for row in flags]
    title_year = items["title_raw"].map(split_title_year)
    items["title"] = [t for t, _ in title_year]
    release_year = items["release_date"].str.strip().str[-4:]
    items["year"] = [r if r.isdigit() else y for r, (_, y) in zip(release_year, title_year)]
    items["decade"] = items["year"].map(decade_of)
    items = items[["item_id", "title", "genres", "year", "decade", "_source", "_line", "_raw"]]

    rejected = pd.concat(
        [p.rejected for p in (genres_parsed, ratings, users_parsed, items_parsed) if len(p.rejected)]
        or [pd.DataFrame(columns=REJECT_COLUMNS)],
        ignore_index=True,
    )
    return RawTables(items, users, events, rejected, value_range=(1, 5), label_threshold=4)


def read_movielens_latest(folder: Path) -> RawTables:
    """ml-latest-small: ratings.csv and movies.csv (UTF-8, quoted CSV with headers)."""
    ratings = read_delimited(
        folder / "ratings.csv", ["user_id", "item_id", "value", "ts"], "events", sep=",",
        header=["userId", "movieId", "rating", "timestamp"], quoted=True,
    )
    events = _events_frame(ratings)
    movies = read_delimited(
        folder / "movies.csv", ["item_id", "title_raw", "genres_raw"], "items", sep=",",
        header=["movieId", "title", "genres"], quoted=True,
    )
    items = movies.rows
    title_year = items["title_raw"].map(split_title_year)
    items["title"] = [t for t, _ in title_year]
    items["year"] = [y for _, y in title_year]
    items["decade"] = items["year"].map(decade_of)
    items["genres"] = items["genres_raw"].where(items["genres_raw"] != "(no genres listed)", "")
    items = items[["item_id", "title", "genres", "year", "decade", "_source", "_line", "_raw"]]
    # No user file: validation derives the users from the accepted ratings (the id is the profile).
    users = pd.DataFrame(columns=["user_id", "_source", "_line", "_raw"])
    rejected = pd.concat(
        [p.rejected for p in (ratings, movies) if len(p.rejected)] or [pd.DataFrame(columns=REJECT_COLUMNS)],
        ignore_index=True,
    )
    return RawTables(items, users, events, rejected, value_range=(0.5, 5), label_threshold=4, users_derived=True)


READERS: dict[str, Callable[[Path], RawTables]] = {
    "movielens-100k": read_movielens_100k,
    "movielens-latest": read_movielens_latest,
}


def read_raw(spec: DatasetSpec, folder: Path) -> RawTables:
    """Read a dataset's raw files with the reader its spec names."""
    try:
        reader = READERS[spec.reader]
    except KeyError:
        raise FormatError(f"spec {spec.name!r} names reader {spec.reader!r}; known readers: {sorted(READERS)}") from None
    return reader(folder)
