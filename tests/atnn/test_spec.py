"""Specs: the shipped ones load; malformed ones fail naming the file and the field."""

import pytest
import yaml

from atnn.spec import SpecError, load_spec, parse_spec


def test_shipped_specs_load():
    ml = load_spec("ml-100k")
    assert [f.name for f in ml.item_features] == ["genres", "year", "decade", "title"]
    assert ml.user_features[0].name == "user_id" and ml.segment_fields == ("gender", "age_band")
    assert load_spec("ml-latest-small").listed_at == "first_event"


def test_schema_hash_changes_with_features():
    ml = load_spec("ml-100k")
    data = yaml.safe_load(open(ml.source))
    data["item"]["features"].append({"name": "brand", "kind": "categorical"})
    assert parse_spec(data).schema_hash() != ml.schema_hash()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["item"]["features"][0].update(kind="colour"), "has kind 'colour'"),
        (lambda d: d["item"]["features"][0].update(colour=1), "unknown keys"),
        (lambda d: d.pop("reader"), "missing required key 'reader'"),
        (lambda d: d["item"].update(title_field="nope"), "item.title_field names 'nope'"),
        (lambda d: d["stats"].update(features=["pv", "clicks"]), "unknown names \\['clicks'\\]"),
    ],
)
def test_bad_spec_errors_name_the_field(mutate, message):
    data = yaml.safe_load(open(load_spec("ml-100k").source))
    mutate(data)
    with pytest.raises(SpecError, match=message):
        parse_spec(data, where="my.yaml")


def test_unknown_spec_lists_shipped_ones():
    with pytest.raises(SpecError, match="shipped specs: \\['ml-100k', 'ml-latest-small', 'taobao'\\]"):
        load_spec("tmall-xyz")


def test_taobao_and_example_specs_load():
    taobao = load_spec("taobao")
    assert taobao.behavior_keys == ("cate_id", "brand") and taobao.stats_window_days == 3
    assert taobao.unknown_users == "keep" and [f.name for f in taobao.event.features] == ["pid"]
    shop = load_spec("examples/shop/spec.yaml")
    assert shop.id_type == "string" and shop.feature("seller").hash_buckets == 16
    assert not shop.feature("signed_up_at").is_model_input and not shop.feature("device").is_model_input
    assert shop.source.startswith("/")  # absolute: Feast changes directory


@pytest.mark.parametrize(
    "feature, message",
    [
        ({"name": "brand", "kind": "categorical", "log": True}, "option 'log' applies to kinds \\['numeric'\\], not 'categorical'"),
        ({"name": "price", "kind": "numeric", "hash_buckets": 8}, "option 'hash_buckets' applies to kinds"),
        ({"name": "price", "kind": "numeric", "log": True, "buckets": [1, 10]}, "use either log or buckets"),
        ({"name": "price", "kind": "numeric", "buckets": [10, 1]}, "strictly increasing"),
        ({"name": "brand", "kind": "categorical", "max_vocab": 0}, "max_vocab must be an integer >= 1"),
        ({"name": "tags", "kind": "categorical", "separator": ","}, "option 'separator' applies to kinds \\['multi_categorical'\\]"),
        ({"name": "item_id", "kind": "categorical"}, "reserved for canonical columns"),
        ({"name": "2nd", "kind": "categorical"}, "letters, digits and underscores"),
    ],
)
def test_bad_feature_options_name_the_feature(feature, message):
    data = yaml.safe_load(open(load_spec("ml-100k").source))
    data["item"]["features"].append(feature)
    with pytest.raises(SpecError, match=message):
        parse_spec(data, where="my.yaml")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["event"].update(features=[{"name": "device", "kind": "categorical", "max_vocab": 5}]), "event columns are stored, not encoded"),
        (lambda d: d["event"].update(value_range=[5, 1]), "low 5 above high 1"),
        (lambda d: d["user"].update(unknown_users="drop"), "user.unknown_users must be one of"),
        (lambda d: d["stats"].update(behavior_keys=["year"]), "behavior_keys \\['year'\\] must name categorical item features"),
        (lambda d: d["stats"].update(window_days=0), "stats.window_days must be an integer >= 1"),
        (lambda d: d.update(colour="red"), "unknown top-level keys \\['colour'\\]"),
    ],
)
def test_bad_event_user_and_stats_sections(mutate, message):
    data = yaml.safe_load(open(load_spec("ml-100k").source))
    mutate(data)
    with pytest.raises(SpecError, match=message):
        parse_spec(data, where="my.yaml")


def test_schema_hash_of_shipped_specs_is_stable():
    # A trained model ranks only under the schema hash it was trained with: a change here makes every
    # model trained on that spec unusable until retrained (an option a spec does not use must not count).
    assert load_spec("ml-100k").schema_hash() == "d314907ce77c3555"
    assert load_spec("ml-latest-small").schema_hash() == "cf0b8971ac0bbc6f"
