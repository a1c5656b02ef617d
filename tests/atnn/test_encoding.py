"""Encoders: vocabularies from training rows, OOV and padding, numeric imputation, round trip."""

import numpy as np
import pandas as pd

from atnn.encoding import OOV, PAD, FeatureEncoder
from atnn.spec import load_spec

SPEC = load_spec("ml-100k")


def _items():
    return pd.DataFrame(
        {
            "item_id": [1, 2, 3],
            "genres": ["Comedy|Drama", "Drama", "Comedy"],
            "year": [1990.0, np.nan, 2000.0],
            "decade": ["1990s", None, "2000s"],
            "title": ["The Big Night", "Night Moves", "The Big Sleep"],
            "pv": [10, 20, 30], "uv": [10, 20, 30], "positives": [5, 5, 5],
            "pos_rate": [0.5, 0.3, 0.2], "value_mean": [3.0, np.nan, 4.0],
        }
    )


def _users():
    return pd.DataFrame(
        {"user_id": [1, 2], "age_band": ["18-24", "25-34"], "gender": ["M", "F"], "occupation": ["a", "b"], "zip_prefix": ["1", "2"]}
    )


def test_vocab_oov_and_padding():
    enc = FeatureEncoder.fit(SPEC, _items(), _users(), _items())
    new = pd.DataFrame({"genres": ["Drama|Horror", ""], "year": [1995.0, None], "decade": ["1950s", "1990s"], "title": ["big unseen", ""]})
    out = enc.encode(new, "item")
    genre_index = {t: i + 2 for i, t in enumerate(enc.features[0].vocab)}
    # Known genre -> its id, unseen genre -> OOV, then padding.
    assert out["genres"][0][:3].tolist() == [genre_index["Drama"], OOV, PAD]
    assert out["genres"][1].tolist() == [PAD] * 6
    assert out["decade"].tolist()[0] == OOV
    # 'big' appears twice in training titles (min_count 2) and is kept; 'unseen' is OOV.
    title_vocab = enc.features[3].vocab
    assert "big" in title_vocab and "night" in title_vocab and "moves" not in title_vocab
    assert out["title"][0][:2].tolist() == [title_vocab.index("big") + 2, OOV]


def test_numeric_is_standardized_with_missing_flag():
    enc = FeatureEncoder.fit(SPEC, _items(), _users(), _items())
    out = enc.encode(pd.DataFrame({"genres": [""], "year": [None], "decade": [""], "title": [""]}), "item")
    assert out["year"].tolist() == [[0.0, 1.0]]
    out = enc.encode(pd.DataFrame({"genres": [""], "year": [2000.0], "decade": [""], "title": [""]}), "item")
    expected = (2000.0 - 1995.0) / np.std([1990.0, 2000.0], ddof=1)
    assert out["year"][0][0] == np.float32(expected) and out["year"][0][1] == 0.0


def test_stats_log_scaled_standardized_missing_at_mean():
    enc = FeatureEncoder.fit(SPEC, _items(), _users(), _items())
    matrix = enc.encode_stats(_items())
    assert matrix.shape == (3, len(SPEC.stats))
    np.testing.assert_allclose(matrix.mean(0)[:3], 0.0, atol=1e-6)
    assert matrix[1, SPEC.stats.index("value_mean")] == 0.0


def test_round_trip_and_hash():
    enc = FeatureEncoder.fit(SPEC, _items(), _users(), _items())
    again = FeatureEncoder.from_dict(enc.to_dict())
    assert again.vocab_hash() == enc.vocab_hash()
    for side, frame in (("item", _items()), ("user", _users())):
        a, b = enc.encode(frame, side), again.encode(frame, side)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_usable_profile():
    enc = FeatureEncoder.fit(SPEC, _items(), _users(), _items())
    frame = pd.DataFrame({"genres": ["", None], "year": [None, 1990.0], "decade": [None, None], "title": ["  ", None]})
    assert enc.usable(frame).tolist() == [False, True]
