"""ATNN modules: embeddings, cross network, towers, the explicit interaction H, and the full model.

The model is assembled from small modules passed into constructors and returns logits; the losses
and Algorithm 1 live in atnn.train. No Prefect or Feast here.

Choices the paper leaves open (see README, "The method"):
- H(i, u) = sum(w * i * u) + a.i + c.u + b: a weighted inner product plus item and user biases, all
  linear in u, so H(i, mean of u) equals the mean of H(i, u) over the same users and the mean user
  vector loses only the sigmoid's curvature.
- L_s does not reach the item encoder: the encoder's vector is the target the generator chases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atnn.config import ModelConfig
from atnn.encoding import FittedFeature

Inputs = dict[str, torch.Tensor]


class SparseArch(nn.Module):
    """Embeds one side's profile features: one table per categorical or sequence feature
    (sequences are mean-pooled over non-padding positions); numeric features pass through; a pretrained
    text embedding goes through a linear projection to the embedding size.

    `token_dropout`: in training, each token of a text feature (title words) is dropped with this
    probability, so that rare title words cannot single out a training item.
    """

    def __init__(self, features: list[FittedFeature], embedding_dim: int, token_dropout: float = 0.0):
        super().__init__()
        self.token_dropout = token_dropout
        self.features = [f.name for f in features]
        self.dense = [f.name for f in features if f.is_dense]
        self.sequence = {f.name for f in features if f.is_sequence}
        self.text = {f.name for f in features if f.kind == "text_tokens"}
        self.tables = nn.ModuleDict(
            {f.name: nn.Embedding(f.cardinality, embedding_dim, padding_idx=0) for f in features if not f.is_dense}
        )
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.05)
            with torch.no_grad():
                table.weight[0].zero_()
        # A pretrained text embedding (hundreds of numbers) is projected to the embedding size.
        self.projections = nn.ModuleDict(
            {f.name: nn.Linear(f.width, embedding_dim) for f in features if f.kind == "text_embedding"}
        )
        numeric = sum(f.width for f in features if f.is_dense and f.name not in self.projections)
        self.output_dim = embedding_dim * (len(self.tables) + len(self.projections)) + numeric

    def forward(self, inputs: Inputs) -> torch.Tensor:
        parts = []
        for name in self.features:
            x = inputs[name]
            if name in self.tables:
                embedded = self.tables[name](x)
                if name in self.sequence:
                    keep = x != 0
                    if self.training and self.token_dropout > 0 and name in self.text:
                        keep = keep & (torch.rand(x.shape) >= self.token_dropout)
                    mask = keep.unsqueeze(-1).to(embedded.dtype)
                    embedded = (embedded * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                parts.append(embedded)
            elif name in self.projections:
                parts.append(self.projections[name](x))
            else:
                parts.append(x)
        return torch.cat(parts, dim=-1)


class CrossNetwork(nn.Module):
    """DCN cross layers: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l (explicit bounded-degree interactions)."""

    def __init__(self, input_dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight, gain=0.5)
            nn.init.zeros_(layer.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class MLP(nn.Module):
    def __init__(self, input_dim: int, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        dim = input_dim
        for width in hidden:
            layers += [nn.Linear(dim, width), nn.ReLU(), nn.Dropout(dropout)]
            dim = width
        self.net = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Tower(nn.Module):
    """Cross network and deep layers side by side (DCN), projected to the shared vector size."""

    def __init__(self, input_dim: int, config: ModelConfig):
        super().__init__()
        self.cross = CrossNetwork(input_dim, config.cross_layers) if config.tower == "dcn" and config.cross_layers else None
        self.deep = MLP(input_dim, config.deep_layers, config.dropout)
        out_in = self.deep.output_dim + (input_dim if self.cross is not None else 0)
        self.project = nn.Linear(out_in, config.vector_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.deep(x)]
        if self.cross is not None:
            parts.append(self.cross(x))
        return self.project(torch.cat(parts, dim=-1))


class ItemEncoder(nn.Module):
    """f_i: item profile + first-window statistics -> item vector."""

    def __init__(self, sparse: SparseArch, num_stats: int, config: ModelConfig):
        super().__init__()
        self.sparse = sparse
        self.tower = Tower(sparse.output_dim + num_stats, config)

    def forward(self, item: Inputs, stats: torch.Tensor) -> torch.Tensor:
        return self.tower(torch.cat([self.sparse(item), stats], dim=-1))


class Generator(nn.Module):
    """g: item profile alone -> item vector (what a new arrival has)."""

    def __init__(self, sparse: SparseArch, config: ModelConfig):
        super().__init__()
        self.sparse = sparse
        self.tower = Tower(sparse.output_dim, config)

    def forward(self, item: Inputs) -> torch.Tensor:
        return self.tower(self.sparse(item))


class UserEncoder(nn.Module):
    """f_u: user profile -> user vector."""

    def __init__(self, sparse: SparseArch, config: ModelConfig):
        super().__init__()
        self.sparse = sparse
        self.tower = Tower(sparse.output_dim, config)

    def forward(self, user: Inputs) -> torch.Tensor:
        return self.tower(self.sparse(user))


class Interaction(nn.Module):
    """H(i, u) = sum(w * i * u) + a.i + c.u + b: the explicit layer between the towers (a logit)."""

    def __init__(self, vector_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(vector_dim))
        self.item_bias = nn.Linear(vector_dim, 1, bias=False)
        self.user_bias = nn.Linear(vector_dim, 1, bias=True)

    def forward(self, item_vector: torch.Tensor, user_vector: torch.Tensor) -> torch.Tensor:
        return (
            (item_vector * self.weight * user_vector).sum(-1)
            + self.item_bias(item_vector).squeeze(-1)
            + self.user_bias(user_vector).squeeze(-1)
        )


class ATNN(nn.Module):
    """Item encoder, user encoder, generator and H; generator and item encoder share embeddings."""

    def __init__(self, item_encoder: ItemEncoder, user_encoder: UserEncoder, generator: Generator, interaction: Interaction):
        super().__init__()
        self.item_encoder = item_encoder
        self.user_encoder = user_encoder
        self.generator = generator
        self.interaction = interaction

    @classmethod
    def build(cls, item_features: list[FittedFeature], user_features: list[FittedFeature], num_stats: int, config: ModelConfig) -> "ATNN":
        item_sparse = SparseArch(item_features, config.embedding_dim, config.token_dropout)
        generator_sparse = item_sparse if config.shared_embeddings else SparseArch(item_features, config.embedding_dim, config.token_dropout)
        return cls(
            item_encoder=ItemEncoder(item_sparse, num_stats, config),
            user_encoder=UserEncoder(SparseArch(user_features, config.embedding_dim), config),
            generator=Generator(generator_sparse, config),
            interaction=Interaction(config.vector_dim),
        )

    def encoded_logits(self, item: Inputs, stats: torch.Tensor, user: Inputs) -> torch.Tensor:
        """H(f_i(X_i), f_u(X_u)): the two-tower CTR logit with statistics."""
        return self.interaction(self.item_encoder(item, stats), self.user_encoder(user))

    def generated_logits(self, item: Inputs, user: Inputs) -> torch.Tensor:
        """H(g(X_ip), f_u(X_u)): the new-arrival CTR logit from the profile alone."""
        return self.interaction(self.generator(item), self.user_encoder(user))


class PopularityModel(nn.Module):
    """The exported scorer: profile features in, generated item vector and popularity out.

    popularity = sigmoid(H(g(x), mean user vector)), O(1) per item.
    """

    def __init__(self, generator: Generator, interaction: Interaction, mean_user_vector: torch.Tensor, input_names: list[str]):
        super().__init__()
        self.generator = generator
        self.interaction = interaction
        self.register_buffer("mean_user_vector", mean_user_vector.detach().clone().reshape(1, -1))
        self.input_names = list(input_names)

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        item_vector = self.generator(dict(zip(self.input_names, features)))
        logit = self.interaction(item_vector, self.mean_user_vector.expand(item_vector.shape[0], -1))
        return item_vector, torch.sigmoid(logit)


@dataclass
class Batch:
    """One training batch: item inputs, statistics, user inputs, labels."""

    item: Inputs
    stats: torch.Tensor
    user: Inputs
    label: torch.Tensor
