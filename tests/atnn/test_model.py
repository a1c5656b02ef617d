"""Model modules: shapes, shared embedding storage, the cross layer formula, H's linearity in u."""

import torch

from atnn.config import ModelConfig
from atnn.encoding import FittedFeature
from atnn.model import ATNN, CrossNetwork, Interaction, PopularityModel

ITEM = [
    FittedFeature("genres", "item", "multi_categorical", vocab=["a", "b", "c"], max_len=3),
    FittedFeature("year", "item", "numeric"),
    FittedFeature("decade", "item", "categorical", vocab=["x", "y"]),
]
USER = [FittedFeature("user_id", "user", "categorical", vocab=["1", "2", "3"])]
CONFIG = ModelConfig(embedding_dim=4, vector_dim=6, cross_layers=2, deep_layers=(8,), dropout=0.0)


def _inputs(batch=5):
    torch.manual_seed(0)
    item = {"genres": torch.randint(0, 5, (batch, 3)), "year": torch.randn(batch, 2), "decade": torch.randint(0, 4, (batch,))}
    user = {"user_id": torch.randint(0, 5, (batch,))}
    return item, torch.randn(batch, 3), user


def test_shapes():
    model = ATNN.build(ITEM, USER, 3, CONFIG)
    item, stats, user = _inputs()
    assert model.item_encoder(item, stats).shape == (5, 6)
    assert model.generator(item).shape == (5, 6)
    assert model.user_encoder(user).shape == (5, 6)
    assert model.encoded_logits(item, stats, user).shape == (5,)
    assert model.generated_logits(item, user).shape == (5,)


def test_generator_and_item_encoder_share_embedding_storage():
    model = ATNN.build(ITEM, USER, 3, CONFIG)
    for name in ("genres", "decade"):
        a = model.item_encoder.sparse.tables[name].weight
        b = model.generator.sparse.tables[name].weight
        assert a is b and a.data_ptr() == b.data_ptr()
    separate = ATNN.build(ITEM, USER, 3, ModelConfig(**{**CONFIG.__dict__, "shared_embeddings": False}))
    assert separate.item_encoder.sparse.tables["genres"].weight.data_ptr() != separate.generator.sparse.tables["genres"].weight.data_ptr()


def test_sequence_pooling_ignores_padding():
    model = ATNN.build(ITEM, USER, 3, CONFIG)
    sparse = model.generator.sparse
    with_pad = {"genres": torch.tensor([[2, 0, 0]]), "year": torch.zeros(1, 2), "decade": torch.tensor([2])}
    alone = sparse(with_pad)[0, :4]
    torch.testing.assert_close(alone, sparse.tables["genres"].weight[2])


def test_cross_layer_formula():
    cross = CrossNetwork(3, 1)
    x0 = torch.tensor([[1.0, 2.0, 3.0]])
    layer = cross.layers[0]
    expected = x0 * (x0 @ layer.weight.T + layer.bias) + x0
    torch.testing.assert_close(cross(x0), expected)


def test_interaction_is_linear_in_user_vector():
    torch.manual_seed(1)
    h = Interaction(6)
    with torch.no_grad():
        h.weight.copy_(torch.randn(6))
    item = torch.randn(4, 6)
    users = torch.randn(10, 6)
    exact = torch.stack([h(item, u.expand(4, -1)) for u in users]).mean(0)
    torch.testing.assert_close(h(item, users.mean(0).expand(4, -1)), exact)


def test_popularity_model_outputs():
    model = ATNN.build(ITEM, USER, 3, CONFIG).eval()
    mean_user = torch.randn(6)
    pop = PopularityModel(model.generator, model.interaction, mean_user, ["genres", "year", "decade"]).eval()
    item, _, _ = _inputs()
    vector, score = pop(item["genres"], item["year"], item["decade"])
    torch.testing.assert_close(vector, model.generator(item))
    expected = torch.sigmoid(model.interaction(vector, mean_user.expand(5, -1)))
    torch.testing.assert_close(score, expected)
    assert ((score > 0) & (score < 1)).all()
