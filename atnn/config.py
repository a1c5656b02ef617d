"""Typed configuration with named profiles.

Config lives in three places only: these typed defaults, deployment parameters in `prefect.yaml`,
and store settings in `features/feature_store.yaml`. Environment variables override paths so that
CI, tests and deployments can point the same code at other directories:

- `ATNN_HOME`: working state (DuckDB file, canonical Parquet, Feast registry, model checkpoints);
  default `var/` in the project root.
- `ATNN_DATA_DIR`: the directory holding the raw datasets (for example `../shared/datasets`).
- `ATNN_ONNX_DIR`: the model repository for exported ONNX artifacts; default `onnx/`.
- `ATNN_PROFILE`: `default` or `test` (tiny sizes that run in seconds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and switches of the ATNN towers."""

    embedding_dim: int = 16
    vector_dim: int = 32
    cross_layers: int = 2
    deep_layers: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    # "dcn": cross network + deep layers (the paper); "mlp": deep layers only (an ablation).
    tower: str = "dcn"
    # The generator and the item encoder share their embedding tables (the paper); False is an ablation.
    shared_embeddings: bool = True
    # Training-time dropout of text tokens (title words); 0 = off.
    token_dropout: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """How ATNN is trained (Algorithm 1) and how the mean user vector is formed."""

    epochs: int = 12
    batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 1e-6
    # Weight of the similarity loss L_s in the generator step.
    lambda_s: float = 1.0
    seed: int = 0
    # Early stopping on the generator's validation AUC.
    patience: int = 2
    # Share of warm items held out (by item) for early stopping and the reported validation AUC.
    validation_fraction: float = 0.1
    # The mean user vector is the mean over the top-K most active users of the training window.
    top_k_users: int = 500
    # Parameters of the smoothed positive rate: prior strength in events.
    prior_events: float = 10.0
    threads: int = 0  # 0: leave torch's default


@dataclass(frozen=True)
class ScaleConfig:
    """How the daily ranking scales out (README, "Scale").

    `partitions` > 1 splits a day's new arrivals into that many parts and maps their scoring over
    Prefect's task runner: `task_runner` "threads" (in the flow's process) or "dask" (prefect-dask):
    the cluster at `dask_address` (a scheduler such as tcp://10.0.0.5:8786), else a LocalCluster of
    `dask_workers` single-threaded worker processes.
    """

    partitions: int = 1
    task_runner: str = "threads"
    dask_address: str = ""
    dask_workers: int = 2


@dataclass(frozen=True)
class Paths:
    """Where things live. Everything under `home` is working state and never committed."""

    home: Path
    onnx_dir: Path
    data_dir: Path | None
    feature_repo: Path = PROJECT_ROOT / "features"

    @property
    def db(self) -> Path:
        return self.home / "atnn.duckdb"

    @property
    def canonical_dir(self) -> Path:
        return self.home / "canonical"

    @property
    def feast_home(self) -> Path:
        return self.home / "feast"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def dataset_dir(self, dataset: str) -> Path:
        """The raw files of one dataset, with a clear error when the directory is not configured."""
        if self.data_dir is None:
            raise ConfigError(
                "no dataset directory configured: set ATNN_DATA_DIR (for example "
                "ATNN_DATA_DIR=../shared/datasets) or pass --data-dir"
            )
        path = self.data_dir / dataset
        if not path.is_dir():
            raise ConfigError(
                f"dataset directory {path} does not exist (ATNN_DATA_DIR={self.data_dir}); "
                f"expected a folder named {dataset!r} in it"
            )
        return path


@dataclass(frozen=True)
class Settings:
    """Everything one run needs."""

    profile: str
    dataset: str
    paths: Paths
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model_name: str = "atnn"
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def with_overrides(self, **changes: Any) -> "Settings":
        """A copy with top-level fields, or `model.x` / `train.x` fields, replaced."""
        top: dict[str, Any] = {}
        model: dict[str, Any] = {}
        train: dict[str, Any] = {}
        for key, value in changes.items():
            if key.startswith("model."):
                model[key[6:]] = value
            elif key.startswith("train."):
                train[key[6:]] = value
            else:
                top[key] = value
        out = replace(self, **top)
        if model:
            out = replace(out, model=replace(out.model, **model))
        if train:
            out = replace(out, train=replace(out.train, **train))
        return out


PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # Tiny sizes: the whole pipeline runs in seconds on tiny data.
    "test": {
        "model": ModelConfig(embedding_dim=4, vector_dim=8, cross_layers=1, deep_layers=(16,), dropout=0.0),
        "train": TrainConfig(epochs=2, batch_size=256, top_k_users=50, patience=1),
    },
}


def _env_path(name: str, default: Path | None) -> Path | None:
    value = os.environ.get(name)
    if value:
        return Path(value).expanduser().resolve()
    return default


def load_settings(
    profile: str | None = None,
    dataset: str | None = None,
    home: str | Path | None = None,
    data_dir: str | Path | None = None,
    onnx_dir: str | Path | None = None,
) -> Settings:
    """Settings from a profile, then environment variables, then explicit arguments."""
    profile = profile or os.environ.get("ATNN_PROFILE", "default")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    paths = Paths(
        home=Path(home).resolve() if home else _env_path("ATNN_HOME", PROJECT_ROOT / "var"),  # type: ignore[arg-type]
        onnx_dir=Path(onnx_dir).resolve() if onnx_dir else _env_path("ATNN_ONNX_DIR", PROJECT_ROOT / "onnx"),  # type: ignore[arg-type]
        data_dir=Path(data_dir).resolve() if data_dir else _env_path("ATNN_DATA_DIR", None),
    )
    settings = Settings(
        profile=profile,
        dataset=dataset or os.environ.get("ATNN_DATASET", "ml-100k"),
        paths=paths,
    )
    return replace(settings, **PROFILES[profile])
