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

from atnn.text import MODELS as TEXT_MODELS

SPEC_DIR = Path(__file__).resolve().parent / "specs"

KINDS = ("categorical", "multi_categorical", "text_tokens", "numeric", "timestamp")
SIDES = ("item", "user", "event")
# Statistics of an item's first window after arrival, computed in SQL (see atnn.canonical).
STAT_NAMES = ("pv", "uv", "positives", "pos_rate", "n_click", "n_cart", "n_fav", "n_buy", "value_mean")
ID_TYPES = ("int64", "string")
# Columns of the canonical tables themselves: a declared feature may not take one of these names.
CANONICAL_COLUMNS = ("item_id", "user_id", "listed_at", "registered_at", "ts", "label", "kind", "value", "stats_ts")
# Options that only make sense for some kinds; setting one on another kind is a spec error.
_TOKEN_KINDS = ("categorical", "multi_categorical", "text_tokens")
_OPTION_KINDS = {
    "max_vocab": _TOKEN_KINDS,
    "min_count": _TOKEN_KINDS,
    "hash_buckets": _TOKEN_KINDS,
    "separator": ("multi_categorical",),
    "max_len": ("multi_categorical", "text_tokens"),
    "embedding": ("text_tokens",),
    "log": ("numeric",),
    "buckets": ("numeric",),
}
# Feature options added after models were deployed, with their defaults: a spec that leaves one at its
# default keeps its schema hash, so models trained before the option existed still rank.
_LATER_OPTIONS = {"embedding": ""}
# Event-side columns are stored with each event but are not model inputs (the towers are item and user).
_EVENT_FEATURE_KEYS = {"name", "kind", "required", "description"}
UNKNOWN_USER_POLICIES = ("quarantine", "keep")


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
    # text_tokens: also feed the text's pretrained sentence embedding (a model of atnn.text.MODELS)
    # as a second input named "<name>_embedding"
    embedding: str = ""
    # numeric
    log: bool = False
    buckets: tuple[float, ...] = ()  # non-empty: bucketize into a categorical input
    required: bool = False  # a missing value sends the row to quarantine
    description: str = ""

    @property
    def is_sequence(self) -> bool:
        return self.kind in ("multi_categorical", "text_tokens")

    @property
    def embedding_input(self) -> str:
        """The name of the second model input a text feature with an `embedding` adds ("" without)."""
        return f"{self.name}_embedding" if self.embedding else ""

    @property
    def is_model_input(self) -> bool:
        return self.side != "event" and self.kind != "timestamp"

    @property
    def storage_type(self) -> str:
        """The column's type in the canonical tables (DuckDB SQL)."""
        if self.kind == "numeric":
            return "DOUBLE"
        if self.kind == "timestamp":
            return "TIMESTAMP"
        return "VARCHAR"


@dataclass(frozen=True)
class EventSpec:
    """How the events of a dataset are read: allowed kinds, value range, label rule, context columns."""

    # Allowed values of `kind`; empty: any. Another kind sends the row to quarantine.
    kinds: tuple[str, ...] = ()
    # A `value` (a rating, say) outside [low, high] sends the row to quarantine.
    value_range: tuple[float, float] | None = None
    # When the label cell is empty: label = 1 if value >= this threshold else 0.
    label_threshold: float | None = None
    # Event-side columns (position, device, ...): validated and stored on `events`, not model inputs.
    features: tuple[FeatureSpec, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's declaration: reader, id type, item, user and event features, statistics."""

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
    event: EventSpec = field(default_factory=EventSpec)
    # Events of a user missing from the users file: "quarantine" them, or "keep" them (the user gets
    # an empty profile, encoded as out-of-vocabulary).
    unknown_users: str = "quarantine"
    # Item profile columns that attribute `behaviors` (events with no item key, e.g. cart/fav/buy per
    # category and brand) to items: such an event counts for every item sharing these values.
    behavior_keys: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    @property
    def item_inputs(self) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.item_features if f.is_model_input)

    @property
    def user_inputs(self) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.user_features if f.is_model_input)

    def feature(self, name: str) -> FeatureSpec:
        for f in (*self.item_features, *self.user_features, *self.event.features):
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def schema_hash(self) -> str:
        """A short hash of everything that shapes model inputs: ranking checks it against the model's."""
        def shape(f: FeatureSpec) -> dict[str, Any]:
            return {k: v for k, v in asdict(f).items() if not (k in _LATER_OPTIONS and v == _LATER_OPTIONS[k])}

        payload = json.dumps(
            {
                "id_type": self.id_type,
                "item": [shape(f) for f in self.item_features],
                "user": [shape(f) for f in self.user_features],
                "stats": list(self.stats),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


_FEATURE_KEYS = {f for f in FeatureSpec.__dataclass_fields__} - {"side"}


def _positive_int(value: Any, where: str, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _feature(raw: Any, side: str, where: str) -> FeatureSpec:
    if not isinstance(raw, dict) or "name" not in raw or "kind" not in raw:
        raise SpecError(f"{where}: each feature needs at least 'name' and 'kind', got {raw!r}")
    name = raw["name"]
    here = f"{where}: feature {name!r}"
    allowed = _EVENT_FEATURE_KEYS if side == "event" else _FEATURE_KEYS
    unknown = set(raw) - allowed
    if unknown:
        hint = " (event columns are stored, not encoded: only name, kind, required, description)" if side == "event" else ""
        raise SpecError(f"{here} has unknown keys {sorted(unknown)}{hint}")
    if not isinstance(name, str) or not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise SpecError(f"{here}: a name is letters, digits and underscores, not starting with a digit")
    if raw["kind"] not in KINDS:
        raise SpecError(f"{here} has kind {raw['kind']!r}; expected one of {KINDS}")
    kind = raw["kind"]
    for option, kinds in _OPTION_KINDS.items():
        if option in raw and kind not in kinds:
            raise SpecError(f"{here}: option {option!r} applies to kinds {list(kinds)}, not {kind!r}")
    values = dict(raw)
    for key in ("max_vocab", "min_count", "max_len"):
        if key in values:
            _positive_int(values[key], here, key)
    if "hash_buckets" in values:
        _positive_int(values["hash_buckets"], here, "hash_buckets", minimum=0)
    for key in ("log", "required"):
        if key in values and not isinstance(values[key], bool):
            raise SpecError(f"{here}: {key} must be true or false, got {values[key]!r}")
    if "embedding" in values and values["embedding"] not in TEXT_MODELS:
        raise SpecError(f"{here}: embedding must name a packaged text model, one of {sorted(TEXT_MODELS)}; "
                        f"got {values['embedding']!r}")
    if "separator" in values and (not isinstance(values["separator"], str) or not values["separator"]):
        raise SpecError(f"{here}: separator must be a non-empty string")
    if "buckets" in values:
        try:
            buckets = tuple(float(b) for b in values["buckets"])
        except (TypeError, ValueError):
            raise SpecError(f"{here}: buckets must be a list of numbers, got {values['buckets']!r}") from None
        if not buckets or any(b >= c for b, c in zip(buckets, buckets[1:])):
            raise SpecError(f"{here}: buckets must be a non-empty, strictly increasing list of boundaries")
        if values.get("log"):
            # log1p is monotone: bucketing log(x) at log(b) is bucketing x at b, so both together mean nothing.
            raise SpecError(f"{here}: use either log or buckets (boundaries are in the column's own units)")
        values["buckets"] = buckets
    return FeatureSpec(side=side, **values)


def _section(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
    return value


def _event_spec(event: dict[str, Any], where: str) -> EventSpec:
    unknown = set(event) - {"kinds", "value_range", "label_threshold", "features"}
    if unknown:
        raise SpecError(f"{where}: event has unknown keys {sorted(unknown)}")
    kinds = event.get("kinds") or ()
    if not isinstance(kinds, (list, tuple)) or not all(isinstance(k, str) and k for k in kinds):
        raise SpecError(f"{where}: event.kinds must be a list of kind names, got {kinds!r}")
    value_range = event.get("value_range")
    if value_range is not None:
        try:
            low, high = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise SpecError(f"{where}: event.value_range must be [low, high], got {value_range!r}") from None
        if low > high:
            raise SpecError(f"{where}: event.value_range has low {low:g} above high {high:g}")
        value_range = (low, high)
    threshold = event.get("label_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise SpecError(f"{where}: event.label_threshold must be a number, got {threshold!r}")
    features = tuple(_feature(f, "event", f"{where}: event.features") for f in event.get("features") or ())
    return EventSpec(
        kinds=tuple(kinds), value_range=value_range,
        label_threshold=None if threshold is None else float(threshold), features=features,
    )


def parse_spec(data: dict[str, Any], where: str = "<spec>") -> DatasetSpec:
    """Build and check a spec from its YAML mapping; errors name the file and field."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping at the top level")
    for key in ("name", "reader", "item", "user"):
        if key not in data:
            raise SpecError(f"{where}: missing required key {key!r}")
    unknown = set(data) - {"name", "reader", "description", "id_type", "item", "user", "event", "stats"}
    if unknown:
        raise SpecError(f"{where}: unknown top-level keys {sorted(unknown)}")
    item = _section(data, "item", where)
    user = _section(data, "user", where)
    stats_section = _section(data, "stats", where)
    event = _event_spec(_section(data, "event", where), where)
    item_features = tuple(_feature(f, "item", f"{where}: item.features") for f in item.get("features") or [])
    user_features = tuple(_feature(f, "user", f"{where}: user.features") for f in user.get("features") or [])
    names = [f.name for f in (*item_features, *user_features, *event.features)]
    names += [f.embedding_input for f in (*item_features, *user_features) if f.embedding]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{where}: feature names must be unique across sides, repeated: {duplicates} "
                        "(a text feature with an embedding also takes the name <name>_embedding)")
    reserved = {*CANONICAL_COLUMNS, *STAT_NAMES}
    # user_id may be declared as a user feature: the paper feeds the user's own id to the user tower.
    clash = sorted(set(names) & reserved - ({"user_id"} if "user_id" in {f.name for f in user_features} else set()))
    if clash:
        raise SpecError(f"{where}: feature names {clash} are reserved for canonical columns")
    if not item_features:
        raise SpecError(f"{where}: item.features is empty; the generator needs at least one item profile feature")
    if not any(f.is_model_input for f in item_features):
        raise SpecError(f"{where}: item.features has no model input (timestamps are stored, not encoded)")
    stats = tuple(stats_section.get("features", DatasetSpec.stats))
    bad_stats = sorted(set(stats) - set(STAT_NAMES))
    if bad_stats:
        raise SpecError(f"{where}: stats.features has unknown names {bad_stats}; known: {STAT_NAMES}")
    window = stats_section.get("window_days", 30)
    _positive_int(window, where, "stats.window_days")
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
    unknown_users = user.get("unknown_users", "quarantine")
    if unknown_users not in UNKNOWN_USER_POLICIES:
        raise SpecError(f"{where}: user.unknown_users must be one of {UNKNOWN_USER_POLICIES}, got {unknown_users!r}")
    behavior_keys = tuple(stats_section.get("behavior_keys") or ())
    categorical_items = {f.name for f in item_features if f.kind == "categorical"}
    bad_keys = sorted(set(behavior_keys) - categorical_items)
    if bad_keys:
        raise SpecError(f"{where}: stats.behavior_keys {bad_keys} must name categorical item features")
    return DatasetSpec(
        name=str(data["name"]),
        reader=str(data["reader"]),
        item_features=item_features,
        user_features=user_features,
        id_type=id_type,
        stats=stats,
        stats_window_days=int(window),
        listed_at=listed_at,
        title_field=item.get("title_field"),
        category_field=item.get("category_field"),
        segment_fields=segments,
        event=event,
        unknown_users=unknown_users,
        behavior_keys=behavior_keys,
        description=str(data.get("description", "")),
        source=str(where),
    )


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """A spec by dataset name (a file shipped in atnn/specs) or by path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if not path.suffix:
        path = SPEC_DIR / f"{name_or_path}.yaml"
    # Absolute, so that the path still holds after Feast changes directory into features/.
    path = path.resolve()
    if not path.is_file():
        known = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
        raise SpecError(f"spec {name_or_path!r} not found (looked for {path}); shipped specs: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    return parse_spec(data, where=str(path))
