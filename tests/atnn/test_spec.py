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
    with pytest.raises(SpecError, match="shipped specs: \\['ml-100k', 'ml-latest-small'\\]"):
        load_spec("taobao-xyz")
