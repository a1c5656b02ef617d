"""Every encoding option of the spec reaches the encoders and the towers (the example shop's spec).

The ONNX input schema that follows from them is checked in tests/test_byod.py.
"""

import ast
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atnn.canonical import validate
from atnn.config import ModelConfig
from atnn.encoding import OOV, FeatureEncoder
from atnn.model import ATNN
from atnn.readers import read_raw
from atnn.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "examples" / "shop" / "spec.yaml")


@pytest.fixture(scope="module")
def encoder() -> FeatureEncoder:
    canonical = validate(read_raw(SPEC, ROOT / "examples" / "shop"), SPEC)
    return FeatureEncoder.fit(SPEC, canonical.items.to_pandas(), canonical.users.to_pandas())


def _fitted(encoder, name):
    return next(f for f in encoder.features if f.name == name)


def test_inputs_follow_the_spec(encoder):
    assert [f.name for f in encoder.side("item")] == ["title", "category", "tags", "brand", "seller", "price", "stock"]
    # Timestamps and event-side columns are stored, not model inputs.
    assert [f.name for f in encoder.side("user")] == ["gender", "age_band", "city_tier"]


def test_vocabulary_cap(encoder):
    brand = _fitted(encoder, "brand")
    # 8 brands in the items; max_vocab 5 keeps the most frequent (ties by name).
    assert brand.vocab == ["Stride", "Hearth", "Weave", "Crema", "Glow"]
    ids = encoder.encode(pd.DataFrame({**{f.name: [None] * 2 for f in SPEC.item_inputs}, "brand": ["Weave", "Monsoon"]}), "item")
    assert ids["brand"].tolist() == [4, OOV]


def test_hashing(encoder):
    seller = _fitted(encoder, "seller")
    assert seller.vocab == [] and seller.cardinality == 16 + 2
    frame = pd.DataFrame({**{f.name: [None, None] for f in SPEC.item_inputs}, "seller": ["s-100", "never-seen"]})
    ids = encoder.encode(frame, "item")["seller"]
    # A seller never seen in training still gets its own hashed id, not the OOV bucket.
    assert ids.tolist() == [zlib.crc32(b"s-100") % 16 + 2, zlib.crc32(b"never-seen") % 16 + 2]


def test_bucketing(encoder):
    stock = _fitted(encoder, "stock")
    assert stock.cardinality == 3 + 3 and stock.input_shape() == ("batch",) and stock.input_dtype() == "int64"
    frame = pd.DataFrame({**{f.name: [None] * 5 for f in SPEC.item_inputs}, "stock": [4, 5, 40, 300, None]})
    # boundaries [5, 20, 100]: below 5 -> 2, [5, 20) -> 3, [20, 100) -> 4, >= 100 -> 5, missing -> OOV.
    assert encoder.encode(frame, "item")["stock"].tolist() == [2, 3, 4, 5, OOV]


def test_log_transform(encoder):
    price = _fitted(encoder, "price")
    prices = np.array([89.90, 24.50, 9.99, 39.00, 19.90, 15.00, 22.00, 18.00, 45.00, 29.00, 27.50, 119.00])
    assert price.mean == pytest.approx(np.log1p(prices).mean())
    assert price.std == pytest.approx(np.log1p(prices).std(ddof=1))
    frame = pd.DataFrame({**{f.name: [None] for f in SPEC.item_inputs}, "price": [1000.0]})
    value, missing = encoder.encode(frame, "item")["price"][0]
    assert value == pytest.approx((np.log1p(1000.0) - price.mean) / price.std, rel=1e-6) and missing == 0.0


def test_sequence_lengths(encoder):
    frame = pd.DataFrame({**{f.name: [None] for f in SPEC.item_inputs},
                          "title": ["one two three four five six seven"], "tags": ["a|b|c|d|e"]})
    encoded = encoder.encode(frame, "item")
    assert encoded["title"].shape == (1, 6) and encoded["tags"].shape == (1, 4)


def test_tower_tables_have_the_declared_sizes(encoder):
    model = ATNN.build(encoder.side("item"), encoder.side("user"), len(SPEC.stats), ModelConfig(embedding_dim=4))
    tables = {name: table.num_embeddings for name, table in model.generator.sparse.tables.items()}
    assert tables["brand"] == 5 + 2 and tables["seller"] == 16 + 2 and tables["stock"] == 3 + 3
    assert "price" not in tables  # a dense input
    assert model.item_encoder.sparse is model.generator.sparse  # shared embeddings


# Columns of the MovieLens specs that no code downstream of the readers may name. (`title` and
# `category` are the rankings table's display columns, filled from the spec's title/category_field.)
MOVIELENS_COLUMNS = {"genres", "year", "decade", "age_band", "gender", "occupation", "zip_prefix", "rating", "movie"}


def test_nothing_downstream_names_a_movielens_column():
    # readers.py maps MovieLens files; synth.py writes its own SYNTHETIC canonical folder: both are upstream.
    downstream = [p for p in (ROOT / "atnn").glob("*.py") if p.name not in ("readers.py", "synth.py")]
    downstream += [*(ROOT / "flows").glob("*.py"), *(ROOT / "features").glob("*.py")]
    found = []
    for path in downstream:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = set(node.value.replace(",", " ").replace("'", " ").replace('"', " ").split())
                found += [f"{path.name}: {w}" for w in words & MOVIELENS_COLUMNS]
    assert found == []
