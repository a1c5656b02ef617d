"""The feature spec: one YAML file per dataset declares every column, its side and its kind.

Everything downstream (canonical schema checks, Feast feature views, encoders, tower inputs, the ONNX
input schema, metadata) derives from a `DatasetSpec`, so nothing downstream names a dataset's column.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPEC_DIR = Path(__file__).resolve().parent / "specs"

KINDS = ("categorical", "multi_categorical", "text_tokens", "numeric", "timestamp")
SIDES = ("item", "user")
# Statistics of an item's first window after arrival, computed in SQL (see atnn.canonical).
STAT_NAMES = ("pv", "uv", "positives", "pos_rate", "n_click", "n_cart", "n_fav", "n_buy", "value_mean")
ID_TYPES = ("int64", "string")


class SpecError(ValueError):
    """The spec file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class FeatureSpec:
    """One profile column and how it is encoded."""

    name: str
    side: str
    kind: str
    # categorical, multi_categorical, text_tokens
    max_vocab: int = 10_000
    min_count: int = 1
    hash_buckets: int = 0  # > 0: hash values into this many buckets instead of a vocabulary
    separator: str = "|"  # multi_categorical
    max_len: int = 8  # multi_categorical, text_tokens: values kept per row
    # numeric
    log: bool = False
    buckets: tuple[float, ...] = ()  # non-empty: bucketize into a categorical input
    required: bool = False  # a missing value sends the row to quarantine
    description: str = ""

    @property
    def is_sequence(self) -> bool:
        return self.kind in ("multi_categorical", "text_tokens")

    @property
    def is_model_input(self) -> bool:
        return self.kind != "timestamp"

    @property
    def storage_type(self) -> str:
        """The column's type in the canonical tables (DuckDB SQL)."""
        if self.kind == "numeric":
            return "DOUBLE"
        if self.kind == "timestamp":
            return "TIMESTAMP"
        return "VARCHAR"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's declaration: reader, id type, item and user features, statistics."""

    name: str
    reader: str
    item_features: tuple[FeatureSpec, ...]
    user_features: tuple[FeatureSpec, ...]
    id_type: str = "int64"
    stats: tuple[str, ...] = ("pv", "uv", "positives", "pos_rate", "value_mean")
    stats_window_days: int = 30
    # How an item's arrival time is known: "first_event" derives it from the event log,
    # "column" reads `listed_at` from the items table.
    listed_at: str = "column"
    title_field: str | None = None
    category_field: str | None = None
    segment_fields: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    @property
    def item_inputs(self) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.item_features if f.is_model_input)

    @property
    def user_inputs(self) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.user_features if f.is_model_input)

    def feature(self, name: str) -> FeatureSpec:
        for f in (*self.item_features, *self.user_features):
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def schema_hash(self) -> str:
        """A short hash of everything that shapes model inputs: ranking checks it against the model's."""
        payload = json.dumps(
            {
                "id_type": self.id_type,
                "item": [asdict(f) for f in self.item_features],
                "user": [asdict(f) for f in self.user_features],
                "stats": list(self.stats),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


_FEATURE_KEYS = {f for f in FeatureSpec.__dataclass_fields__} - {"side"}


def _feature(raw: Any, side: str, where: str) -> FeatureSpec:
    if not isinstance(raw, dict) or "name" not in raw or "kind" not in raw:
        raise SpecError(f"{where}: each feature needs at least 'name' and 'kind', got {raw!r}")
    unknown = set(raw) - _FEATURE_KEYS
    if unknown:
        raise SpecError(f"{where}: feature {raw['name']!r} has unknown keys {sorted(unknown)}")
    if raw["kind"] not in KINDS:
        raise SpecError(f"{where}: feature {raw['name']!r} has kind {raw['kind']!r}; expected one of {KINDS}")
    values = dict(raw)
    if "buckets" in values:
        values["buckets"] = tuple(float(b) for b in values["buckets"])
    return FeatureSpec(side=side, **values)


def parse_spec(data: dict[str, Any], where: str = "<spec>") -> DatasetSpec:
    """Build and check a spec from its YAML mapping; errors name the file and field."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping at the top level")
    for key in ("name", "reader", "item", "user"):
        if key not in data:
            raise SpecError(f"{where}: missing required key {key!r}")
    item = data["item"] or {}
    user = data["user"] or {}
    item_features = tuple(_feature(f, "item", f"{where}: item.features") for f in item.get("features", []))
    user_features = tuple(_feature(f, "user", f"{where}: user.features") for f in user.get("features", []))
    names = [f.name for f in (*item_features, *user_features)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{where}: feature names must be unique across sides, repeated: {duplicates}")
    reserved = {"item_id", "user_id", "listed_at", "registered_at", "ts", "label", "kind", "value", *STAT_NAMES}
    clash = sorted(set(names) & (reserved - {"user_id"}))
    if clash:
        raise SpecError(f"{where}: feature names {clash} are reserved for canonical columns")
    if not item_features:
        raise SpecError(f"{where}: item.features is empty; the generator needs at least one item profile feature")
    stats = tuple(data.get("stats", {}).get("features", DatasetSpec.stats))
    bad_stats = sorted(set(stats) - set(STAT_NAMES))
    if bad_stats:
        raise SpecError(f"{where}: stats.features has unknown names {bad_stats}; known: {STAT_NAMES}")
    id_type = data.get("id_type", "int64")
    if id_type not in ID_TYPES:
        raise SpecError(f"{where}: id_type must be one of {ID_TYPES}, got {id_type!r}")
    listed_at = item.get("listed_at", "column")
    if listed_at not in ("column", "first_event"):
        raise SpecError(f"{where}: item.listed_at must be 'column' or 'first_event', got {listed_at!r}")
    item_names = {f.name for f in item_features}
    for key in ("title_field", "category_field"):
        value = item.get(key)
        if value is not None and value not in item_names:
            raise SpecError(f"{where}: item.{key} names {value!r}, which is not an item feature")
    segments = tuple(user.get("segment_fields", ()))
    user_names = {f.name for f in user_features}
    missing_segments = sorted(set(segments) - user_names)
    if missing_segments:
        raise SpecError(f"{where}: user.segment_fields {missing_segments} are not user features")
    return DatasetSpec(
        name=str(data["name"]),
        reader=str(data["reader"]),
        item_features=item_features,
        user_features=user_features,
        id_type=id_type,
        stats=stats,
        stats_window_days=int(data.get("stats", {}).get("window_days", 30)),
        listed_at=listed_at,
        title_field=item.get("title_field"),
        category_field=item.get("category_field"),
        segment_fields=segments,
        description=str(data.get("description", "")),
        source=str(where),
    )


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """A spec by dataset name (a file shipped in atnn/specs) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SPEC_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
        raise SpecError(f"spec {name_or_path!r} not found (looked for {path}); shipped specs: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    return parse_spec(data, where=str(path))
