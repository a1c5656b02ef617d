"""Property-based tests (hypothesis) of the parsers, validation and feature encoders."""

import string

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atnn.canonical import validate
from atnn.encoding import FeatureEncoder
from atnn.readers import RawTables, age_band, read_delimited, split_title_year
from atnn.spec import load_spec

SPEC = load_spec("ml-100k")
FIELD = st.text(alphabet=string.ascii_letters + string.digits + " .-_éü", max_size=12)
ANY_TEXT = st.one_of(st.none(), st.text(max_size=30), st.just("nan"), st.just("|||"))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(rows=st.lists(st.lists(FIELD, min_size=3, max_size=3), min_size=1, max_size=30))
def test_read_delimited_round_trips_fields_and_line_numbers(tmp_path, rows):
    rows = [r for r in rows if any(f.strip() for f in r)] or [["a", "b", "c"]]
    path = tmp_path / "f.txt"
    path.write_text("\n".join("|".join(r) for r in rows) + "\n", encoding="utf-8")
    parsed = read_delimited(path, ["a", "b", "c"], "t", sep="|")
    assert parsed.rows[["a", "b", "c"]].values.tolist() == rows
    assert parsed.rows["_line"].tolist() == list(range(1, len(rows) + 1))
    assert parsed.rejected.empty


@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["1", "2", "3", "x", "", "99"]),
            st.sampled_from(["1", "2", "7", "-1", "abc"]),
            st.sampled_from(["1", "3", "4", "5", "9", "", "NaN", "4.5"]),
            st.sampled_from(["881250949", "-5", "0", "tomorrow", "2001-09-09 01:46:40", "881250949.5", ""]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_validation_always_reconciles(events):
    def frame(rows, cols):
        df = pd.DataFrame(rows, columns=cols)
        return df.assign(_source="f", _line=range(1, len(df) + 1), _raw=["|".join(map(str, r)) for r in rows])

    raw = RawTables(
        items=frame([["1", "A", "Drama", "1990", "1990s"], ["2", "B", "", "", ""]], ["item_id", "title", "genres", "year", "decade"]),
        users=frame([["1", "18-24", "M", "a", "1"], ["2", "25-34", "F", "b", "2"]], ["user_id", "age_band", "gender", "occupation", "zip_prefix"]),
        events=frame([[u, i, v, t, "rating", ""] for u, i, v, t in events], ["user_id", "item_id", "value", "ts", "kind", "label"]),
        value_range=(1, 5),
        label_threshold=4,
    )
    c = validate(raw, SPEC, max_bad_share=1.0)
    for table, counts in c.counts.items():
        assert counts["read"] == counts["accepted"] + counts["quarantined"], table
    assert c.quarantine["reason"].notna().all()
    accepted = c.events.to_pandas()
    assert accepted["label"].isin([0, 1]).all()
    assert accepted["value"].dropna().between(1, 5).all()


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.tuples(ANY_TEXT, st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), ANY_TEXT, ANY_TEXT), min_size=1, max_size=20))
def test_encoders_never_fail_and_stay_in_range(values):
    train = pd.DataFrame(
        {"item_id": [1, 2, 3], "genres": ["Comedy|Drama", "Drama", "War"], "year": [1990.0, 1995.0, None],
         "decade": ["1990s", "1990s", None], "title": ["big night", "big sleep", "night"]}
    )
    users = pd.DataFrame({"user_id": [1], "age_band": ["18-24"], "gender": ["M"], "occupation": ["a"], "zip_prefix": ["1"]})
    enc = FeatureEncoder.fit(SPEC, train, users)
    frame = pd.DataFrame(values, columns=["genres", "year", "decade", "title"])
    out = enc.encode(frame, "item")
    for f in enc.side("item"):
        x = out[f.name]
        assert len(x) == len(frame)
        if f.is_dense:
            assert x.shape == (len(frame), 2) and np.isfinite(x).all() and set(np.unique(x[:, 1])) <= {0.0, 1.0}
        else:
            assert x.min() >= 0 and x.max() < f.cardinality
            if f.is_sequence:
                assert x.shape == (len(frame), f.max_len)


@given(st.text(max_size=40))
def test_split_title_year_is_total(title):
    name, year = split_title_year(title)
    assert year == "" or (len(year) == 4 and year.isdigit())
    assert name == name.strip()


@given(st.text(max_size=6))
def test_age_band_is_total(age):
    assert age_band(age) in {"", "under18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"}
