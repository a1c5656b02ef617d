"""Model checkpoints (config + state_dict + vocabulary, never a pickled object) and ONNX export.

Layout:
  <home>/models/<model-name>/<version>/{config.json, model.pt, vocab.json, popularity.json}
  <onnx-dir>/<model-name>/<version>/{model.onnx, metadata.json}
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atnn.config import ModelConfig, TrainConfig
from atnn.encoding import FeatureEncoder
from atnn.model import ATNN, PopularityModel
from atnn.spec import DatasetSpec

CHECKPOINT_FORMAT = 1


def new_version(now: datetime | None = None) -> str:
    """A sortable model version: the UTC time of training, to the second."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


@dataclass
class MeanUserVector:
    """The stored mean of the top-K active users' vectors, with what identifies it."""

    vector: list[float]
    k: int
    num_users: int
    # One mean user vector per segment of the spec's `user.segment_fields` (name like 'F|25-34').
    segment_fields: list[str] = field(default_factory=list)
    segments: dict[str, list[float]] = field(default_factory=dict)

    @property
    def version(self) -> str:
        payload = json.dumps([round(x, 6) for x in self.vector]) + f"|{self.k}|{self.num_users}"
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class Checkpoint:
    """Everything needed to rebuild a trained model and check it against the current features."""

    model: ATNN
    encoder: FeatureEncoder
    model_config: ModelConfig
    train_config: TrainConfig
    spec_hash: str
    mean_user: MeanUserVector
    info: dict[str, Any]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(directory: Path, checkpoint: Checkpoint) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format": CHECKPOINT_FORMAT,
        "model": asdict(checkpoint.model_config),
        "train": asdict(checkpoint.train_config),
        "spec_hash": checkpoint.spec_hash,
        "vocab_hash": checkpoint.encoder.vocab_hash(),
        "info": checkpoint.info,
    }
    _write_json(directory / "config.json", config)
    _write_json(directory / "vocab.json", checkpoint.encoder.to_dict())
    _write_json(directory / "popularity.json", {**asdict(checkpoint.mean_user), "version": checkpoint.mean_user.version})
    torch.save(checkpoint.model.state_dict(), directory / "model.pt")
    return directory


def load_checkpoint(directory: Path) -> Checkpoint:
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if config.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{directory}: checkpoint format {config.get('format')} is not {CHECKPOINT_FORMAT}")
    encoder = FeatureEncoder.from_dict(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))
    if encoder.vocab_hash() != config["vocab_hash"]:
        raise ValueError(f"{directory}: vocab.json does not match the vocabulary hash in config.json")
    model_config = ModelConfig(**{**config["model"], "deep_layers": tuple(config["model"]["deep_layers"])})
    train_config = TrainConfig(**config["train"])
    model = ATNN.build(encoder.side("item"), encoder.side("user"), len(encoder.stats), model_config)
    model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
    model.eval()
    popularity = json.loads((directory / "popularity.json").read_text(encoding="utf-8"))
    mean_user = MeanUserVector(vector=popularity["vector"], k=popularity["k"], num_users=popularity["num_users"],
                               segment_fields=popularity.get("segment_fields", []), segments=popularity.get("segments", {}))
    return Checkpoint(model, encoder, model_config, train_config, config["spec_hash"], mean_user, config["info"])


def popularity_model(checkpoint: Checkpoint) -> PopularityModel:
    names = [f.name for f in checkpoint.encoder.side("item")]
    vector = torch.tensor(checkpoint.mean_user.vector, dtype=torch.float32)
    return PopularityModel(checkpoint.model.generator, checkpoint.model.interaction, vector, names).eval()


def segment_head(checkpoint: Checkpoint) -> dict[str, Any]:
    """Segment popularity as a matrix product on the exported item vectors (no second ONNX output).

    H is linear in the user vector: H(i, u) = i . (w * u + a) + (c . u + b), so the logit of segment s
    is item_vector @ matrix[s] + offset[s]; the scorer applies it with numpy and a sigmoid.
    """
    names = sorted(checkpoint.mean_user.segments)
    if not names:
        return {"fields": [], "names": [], "matrix": [], "offset": []}
    interaction = checkpoint.model.interaction
    with torch.no_grad():
        users = torch.tensor([checkpoint.mean_user.segments[n] for n in names], dtype=torch.float32)
        matrix = users * interaction.weight + interaction.item_bias.weight.reshape(1, -1)
        offset = interaction.user_bias(users).squeeze(-1)
    return {"fields": list(checkpoint.mean_user.segment_fields), "names": names,
            "matrix": matrix.tolist(), "offset": offset.tolist()}


def example_inputs(encoder: FeatureEncoder, batch: int = 4) -> tuple[torch.Tensor, ...]:
    """Zero-filled inputs of the right shapes and dtypes (padding ids), for tracing."""
    out = []
    for f in encoder.side("item"):
        shape = [batch] + [int(d) for d in f.input_shape()[1:]]
        out.append(torch.zeros(shape, dtype=torch.float32 if f.is_dense else torch.int64))
    return tuple(out)


def export_onnx(
    checkpoint: Checkpoint,
    directory: Path,
    *,
    model_name: str,
    version: str,
    spec: DatasetSpec,
    metrics: dict[str, Any],
) -> Path:
    """Export the generator with the popularity head; write model.onnx and metadata.json."""
    from torch.export import Dim

    directory.mkdir(parents=True, exist_ok=True)
    module = popularity_model(checkpoint)
    inputs = example_inputs(checkpoint.encoder)
    batch = Dim("batch", min=1)
    names = [f.name for f in checkpoint.encoder.side("item")]
    target = directory / "model.onnx"
    tmp = directory / ".model.onnx.tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(tmp),
            input_names=names,
            output_names=["item_vector", "popularity"],
            dynamic_shapes=(tuple({0: batch} for _ in inputs),),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    os.replace(tmp, target)
    metadata = {
        "model_name": model_name,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "dataset": spec.name,
        "spec_hash": checkpoint.spec_hash,
        "vocab_hash": checkpoint.encoder.vocab_hash(),
        "inputs": [
            {"name": f.name, "kind": f.kind, "dtype": f.input_dtype(), "shape": list(f.input_shape())}
            for f in checkpoint.encoder.side("item")
        ],
        "outputs": [
            {"name": "item_vector", "dtype": "float32", "shape": ["batch", checkpoint.model_config.vector_dim]},
            {"name": "popularity", "dtype": "float32", "shape": ["batch"]},
        ],
        "vocab": checkpoint.encoder.to_dict(),
        "mean_user_vector": {"version": checkpoint.mean_user.version, "k": checkpoint.mean_user.k, "num_users": checkpoint.mean_user.num_users},
        "segments": segment_head(checkpoint),
        "metrics": metrics,
        "info": checkpoint.info,
    }
    _write_json(directory / "metadata.json", metadata)
    return target


def max_abs_difference(checkpoint: Checkpoint, onnx_path: Path, inputs: dict[str, np.ndarray]) -> float:
    """Largest |onnxruntime - torch| over both outputs on the same encoded rows."""
    import onnxruntime as ort

    module = popularity_model(checkpoint)
    names = [f.name for f in checkpoint.encoder.side("item")]
    with torch.no_grad():
        vector, popularity = module(*(torch.from_numpy(inputs[n]) for n in names))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_vector, onnx_popularity = session.run(None, {n: inputs[n] for n in names})
    return float(max(np.abs(onnx_vector - vector.numpy()).max(), np.abs(onnx_popularity - popularity.numpy()).max()))
