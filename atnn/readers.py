"""Readers: raw dataset files -> raw canonical tables (strings, with source file and line number).

A reader only parses and maps columns; it keeps every row, with its file, line and raw text, so that
validation (atnn.canonical) can accept it or quarantine it with a reason. A file that is not in the
expected format at all (missing, empty, wrong separator, wrong column count, wrong encoding) stops the
read with a `FormatError` naming the file and what was expected.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
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
    # None: the spec's event.value_range applies.
    value_range: tuple[float, float] | None = None
    # When the raw events carry no label, label = value >= this threshold. None: the spec's applies.
    label_threshold: float | None = None
    # True when the dataset has no user file: users are the distinct users of the accepted events.
    users_derived: bool = False
    # Events with no item key (user_id, ts, kind + the spec's stats.behavior_keys), or None.
    behaviors: pd.DataFrame | None = None


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


def read_movielens_100k(folder: Path, spec: DatasetSpec | None = None) -> RawTables:
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
    # Value range and label rule (rating >= 4) are declared in the spec's `event` section.
    return RawTables(items, users, events, rejected)


def read_movielens_latest(folder: Path, spec: DatasetSpec | None = None) -> RawTables:
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
    return RawTables(items, users, events, rejected, users_derived=True)


# ---------------------------------------------------------------- canonical folders

# The tables of the canonical input format, each a `<table>.csv` or `<table>.parquet` in one folder.
CANONICAL_TABLES = ("items", "users", "events", "behaviors")
CANONICAL_SUFFIXES = (".csv", ".parquet")


def canonical_files(folder: Path) -> dict[str, Path]:
    """The canonical files present in `folder`: table name -> path."""
    if not folder.is_dir():
        raise FormatError(f"{folder}: not a folder; expected a folder with items, users and events files (.csv or .parquet)")
    found: dict[str, Path] = {}
    for table in CANONICAL_TABLES:
        present = [folder / f"{table}{suffix}" for suffix in CANONICAL_SUFFIXES if (folder / f"{table}{suffix}").is_file()]
        if len(present) > 1:
            raise FormatError(f"{folder}: both {present[0].name} and {present[1].name} exist; keep one of them")
        if present:
            found[table] = present[0]
    return found


def canonical_columns(spec: DatasetSpec, table: str) -> tuple[list[str], list[str]]:
    """(required, optional) columns of one canonical table under `spec`."""
    if table == "items":
        listed = ["listed_at"] if spec.listed_at == "column" else []
        return ["item_id", *listed, *[f.name for f in spec.item_features]], []
    if table == "users":
        return ["user_id", *[f.name for f in spec.user_features if f.name != "user_id"]], []
    if table == "events":
        label = ["label"] if spec.event.label_threshold is None else []
        optional = ["kind", "value"] + (["label"] if not label else [])
        return ["user_id", "item_id", "ts", *label, *[f.name for f in spec.event.features]], optional
    if table == "behaviors":
        return ["user_id", "ts", "kind", *spec.behavior_keys], []
    raise ValueError(f"unknown canonical table {table!r}")


def _check_header(path: Path, table: str, header: list[str], required: list[str]) -> None:
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise FormatError(f"{path}: column(s) {duplicates} appear more than once in the header")
    missing = [c for c in required if c not in header]
    if missing:
        raise FormatError(
            f"{path}: missing column(s) {missing}; a canonical {table} file needs {required} "
            f"(names come from the spec), found {header}"
        )


def _read_canonical_csv(path: Path, table: str, required: list[str], optional: list[str]) -> _Parsed:
    """A UTF-8, comma-separated file with a header row; quoted fields may hold commas and newlines."""
    text = _decode(path, "utf-8").removeprefix("\ufeff")
    # The same physical lines the csv module reads, so its line numbers index them.
    lines = list(io.StringIO(text, newline=""))
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:  # pragma: no cover - _decode refuses empty files
        raise FormatError(f"{path}: file is empty") from None
    if len(header) == 1:
        for sep, name in (("\t", "tabs"), (";", "semicolons"), ("|", "pipes")):
            if sep in header[0]:
                raise FormatError(f"{path}: the header is separated by {name}; canonical CSV files are comma-separated")
    _check_header(path, table, header, required)
    wanted = [*required, *[c for c in optional if c in header]]
    positions = [header.index(c) for c in wanted]
    good: list[list[object]] = []
    bad: list[list[object]] = []
    n = len(header)
    previous = reader.line_num
    for fields in reader:
        first, last = previous + 1, reader.line_num
        previous = last
        raw = "".join(lines[first - 1 : last]).rstrip("\r\n")
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if len(fields) != n:
            bad.append([table, str(path), first, raw, f"expected {n} fields (as in the header), got {len(fields)}"])
            continue
        good.append([*(fields[p] for p in positions), str(path), first, raw])
    rows = pd.DataFrame(good, columns=[*wanted, "_source", "_line", "_raw"])
    for column in optional:
        if column not in rows.columns:
            rows[column] = ""
    return _Parsed(rows, pd.DataFrame(bad, columns=REJECT_COLUMNS))


def _as_strings(column: pd.Series, separator: str) -> pd.Series:
    """Parquet values -> the strings a CSV cell would hold ('' for missing)."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(column):
        return column.dt.strftime("%Y-%m-%d %H:%M:%S.%f").fillna("")
    if pd.api.types.is_bool_dtype(column):
        return column.map({True: "1", False: "0"}).fillna("")
    if pd.api.types.is_float_dtype(column):
        integral = column.notna() & (column == column.round())

        def fmt(value: float, whole: bool) -> str:
            if pd.isna(value):
                return ""
            return str(int(value)) if whole and abs(value) < 2**53 else repr(float(value))

        return pd.Series([fmt(v, w) for v, w in zip(column, integral)], index=column.index, dtype=object)

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        if isinstance(value, (list, tuple, np.ndarray)):  # a Parquet list column
            return separator.join(str(v) for v in value if v is not None)
        return str(value)

    return column.map(cell).astype(object)


def _read_canonical_parquet(path: Path, table: str, required: list[str], optional: list[str], spec: DatasetSpec) -> _Parsed:
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a Parquet file we can read"
        raise FormatError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    header = [str(c) for c in frame.columns]
    _check_header(path, table, header, required)
    wanted = [*required, *[c for c in optional if c in header]]
    separators = {f.name: (f.separator if f.kind == "multi_categorical" else " ") for f in (*spec.item_features, *spec.user_features)}
    rows = pd.DataFrame({c: _as_strings(frame[c], separators.get(c, "|")) for c in wanted}, index=frame.index)
    rows = rows.reset_index(drop=True)
    rows["_source"] = str(path)
    rows["_line"] = range(1, len(rows) + 1)  # row number in the file
    rows["_raw"] = [json.dumps(r, ensure_ascii=False) for r in rows[wanted].to_dict("records")]
    for column in optional:
        if column not in rows.columns:
            rows[column] = ""
    return _Parsed(rows, pd.DataFrame(columns=REJECT_COLUMNS))


def read_canonical_table(path: Path, table: str, spec: DatasetSpec) -> _Parsed:
    """One canonical table file (CSV or Parquet) -> string columns named as in the spec."""
    required, optional = canonical_columns(spec, table)
    if path.suffix == ".parquet":
        return _read_canonical_parquet(path, table, required, optional, spec)
    return _read_canonical_csv(path, table, required, optional)


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=[*columns, "_source", "_line", "_raw"])


def read_canonical(folder: Path, spec: DatasetSpec, *, partial: bool = False) -> RawTables:
    """A canonical folder: items, users, events (and optional behaviors) as CSV or Parquet.

    A full load needs items and events, and users unless the spec declares no user profile (then users
    are the distinct users of the events). A daily drop (`partial`) may hold any of the files.
    """
    files = canonical_files(folder)
    has_profile = any(f.name != "user_id" for f in spec.user_features)
    if partial:
        if not files:
            raise FormatError(
                f"{folder}: no canonical files; a drop holds items, users and/or events as .csv or .parquet"
            )
    else:
        needed = ["items", "events"] + (["users"] if has_profile else [])
        missing = [t for t in needed if t not in files]
        if missing:
            raise FormatError(
                f"{folder}: missing {', '.join(t + '.csv (or .parquet)' for t in missing)}; "
                f"a canonical folder holds items, users and events files"
            )
    if "behaviors" in files and not spec.behavior_keys:
        raise FormatError(
            f"{files['behaviors']}: a behaviors file needs stats.behavior_keys in the spec (the item columns that attribute it)"
        )
    parsed: dict[str, _Parsed] = {t: read_canonical_table(p, t, spec) for t, p in files.items()}
    tables: dict[str, pd.DataFrame] = {}
    for table in ("items", "users", "events"):
        required, optional = canonical_columns(spec, table)
        tables[table] = parsed[table].rows if table in parsed else _empty([*required, *optional])
    behaviors = None
    if spec.behavior_keys:
        required, _ = canonical_columns(spec, "behaviors")
        behaviors = parsed["behaviors"].rows if "behaviors" in parsed else _empty(required)
    rejected = [p.rejected for p in parsed.values() if len(p.rejected)]
    return RawTables(
        items=tables["items"],
        users=tables["users"],
        events=tables["events"],
        rejected=pd.concat(rejected, ignore_index=True) if rejected else pd.DataFrame(columns=REJECT_COLUMNS),
        users_derived=not has_profile and "users" not in files,
        behaviors=behaviors,
    )


# ---------------------------------------------------------------- Taobao display ads (Alimama)

TAOBAO_HEADERS = {
    "raw_sample.csv": ["user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk"],
    "ad_feature.csv": ["adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price"],
    # The real file's last header is "new_user_class_level " (trailing space): headers are stripped.
    "user_profile.csv": [
        "userid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
        "shopping_level", "occupation", "new_user_class_level",
    ],
    "behavior_log.csv": ["user", "time_stamp", "btag", "cate", "brand"],
}


def _no_null(column: pd.Series) -> pd.Series:
    """The Taobao files write a missing brand as the text NULL."""
    return column.where(column.str.strip().str.upper() != "NULL", "")


def read_taobao(folder: Path, spec: DatasetSpec | None = None) -> RawTables:
    """Alimama/Taobao display-ad click data: raw_sample, ad_feature, user_profile, behavior_log.

    Each raw_sample row is an ad impression: kind `click` with label 1 when clk = 1, else kind
    `impression` with label 0 (nonclk must be its complement). behavior_log (pv/cart/fav/buy per
    category and brand, no ad id) becomes `behaviors`, attributed to ads by the spec's behavior_keys.
    """
    sample = read_delimited(
        folder / "raw_sample.csv", ["user_id", "ts", "item_id", "pid", "nonclk", "clk"], "events", sep=",",
        header=TAOBAO_HEADERS["raw_sample.csv"],
    )
    events = sample.rows
    clk, nonclk = events["clk"].str.strip(), events["nonclk"].str.strip()
    consistent = ((clk == "1") & (nonclk == "0")) | ((clk == "0") & (nonclk == "1"))
    inconsistent = events.loc[~consistent]
    flag_rejects = pd.DataFrame(
        {
            "table_name": "events",
            "_source": inconsistent["_source"],
            "_line": inconsistent["_line"],
            "_raw": inconsistent["_raw"],
            "reason": "clk and nonclk must be 0/1 and sum to 1",
        },
        columns=REJECT_COLUMNS,
    )
    events = events.loc[consistent].copy()
    events["label"] = events["clk"].str.strip()
    events["kind"] = events["label"].map({"1": "click", "0": "impression"})
    events["value"] = ""
    events = events[["user_id", "item_id", "ts", "kind", "label", "value", "pid", "_source", "_line", "_raw"]]

    ads = read_delimited(
        folder / "ad_feature.csv", ["item_id", "cate_id", "campaign_id", "customer", "brand", "price"], "items",
        sep=",", header=TAOBAO_HEADERS["ad_feature.csv"],
    )
    items = ads.rows
    items["brand"] = _no_null(items["brand"])

    profiles = read_delimited(
        folder / "user_profile.csv", ["user_id", *TAOBAO_HEADERS["user_profile.csv"][1:]], "users", sep=",",
        header=TAOBAO_HEADERS["user_profile.csv"],
    )
    users = profiles.rows

    parts = [sample.rejected, flag_rejects, ads.rejected, profiles.rejected]
    behaviors = None
    if spec is None or spec.behavior_keys:
        log = read_delimited(
            folder / "behavior_log.csv", ["user_id", "ts", "kind", "cate_id", "brand"], "behaviors", sep=",",
            header=TAOBAO_HEADERS["behavior_log.csv"],
        )
        behaviors = log.rows
        behaviors["cate_id"] = _no_null(behaviors["cate_id"])
        behaviors["brand"] = _no_null(behaviors["brand"])
        parts.append(log.rejected)
    rejected = pd.concat([p for p in parts if len(p)] or [pd.DataFrame(columns=REJECT_COLUMNS)], ignore_index=True)
    return RawTables(items, users, events, rejected, behaviors=behaviors)


# ---------------------------------------------------------------- dispatch

Reader = Callable[[Path, DatasetSpec], RawTables]

READERS: dict[str, Reader] = {
    "canonical": read_canonical,
    "movielens-100k": read_movielens_100k,
    "movielens-latest": read_movielens_latest,
    "taobao-display-ads": read_taobao,
}


def _check_columns(raw: RawTables, spec: DatasetSpec) -> None:
    """Every column the spec declares must come out of its reader."""
    expected = {
        "items": [f.name for f in spec.item_features],
        "users": [f.name for f in spec.user_features if f.name != "user_id"] if not raw.users_derived else [],
        "events": [f.name for f in spec.event.features],
        "behaviors": list(spec.behavior_keys),
    }
    for table, columns in expected.items():
        frame = getattr(raw, table)
        if frame is None:
            if columns:
                raise FormatError(f"reader {spec.reader!r} gives no {table}, but spec {spec.source} needs them")
            continue
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise FormatError(
                f"spec {spec.source} declares {table} column(s) {missing}, which reader {spec.reader!r} does not "
                f"provide; it provides {[c for c in frame.columns if not c.startswith('_')]}"
            )


def read_raw(spec: DatasetSpec, folder: Path) -> RawTables:
    """Read a dataset's raw files with the reader its spec names."""
    try:
        reader = READERS[spec.reader]
    except KeyError:
        raise FormatError(f"spec {spec.name!r} names reader {spec.reader!r}; known readers: {sorted(READERS)}") from None
    raw = reader(folder, spec)
    _check_columns(raw, spec)
    return raw
