"""Bring your own data: the whole pipeline (ingest, train, export, rank) through the flows, on the
example canonical folder and on a Taobao-format fixture, with the same code and only another spec;
then daily drops through the flows."""

import json
import shutil
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from atnn import store
from atnn.config import load_settings
from atnn.spec import load_spec
from atnn.warehouse import read_sql
from taobao_format import write_tiny_taobao

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shop"


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _shop(root: Path) -> dict:
    folder = root / "shop"
    shutil.copytree(EXAMPLE, folder)
    return {"dataset": str(folder / "spec.yaml"), "source": str(folder), "data_dir": None, "day": "2024-03-12"}


def _shop_title_embedding(root: Path) -> dict:
    """The example shop with its product names also fed as pretrained sentence embeddings."""
    params = _shop(root)
    spec = Path(params["dataset"])
    text = spec.read_text()
    line = '{name: title, kind: text_tokens, max_len: 6,'
    assert line in text
    spec.write_text(text.replace(line, line + " embedding: all-MiniLM-L6-v2,"))
    return params


def _taobao(root: Path) -> dict:
    write_tiny_taobao(root / "datasets" / "taobao")
    return {"dataset": "taobao", "source": None, "data_dir": str(root / "datasets"), "day": "2017-05-12"}


def run_pipeline(dataset: str, day: str, home: Path, onnx_dir: Path, source: str | None, data_dir: str | None) -> dict:
    """What a user runs: ingest, train on what was known before `day`, rank `day`. Nothing here
    depends on the dataset but its spec and where its files are."""
    from flows.daily_rank import daily_rank
    from flows.ingest import ingest
    from flows.train import train

    common = {"dataset": dataset, "profile": "test", "home": str(home)}
    return {
        "ingest": ingest(**common, data_dir=data_dir, source=source),
        "train": train(**common, as_of=day, onnx_dir=str(onnx_dir)),
        "rank": daily_rank(**common, date=day),
    }


@pytest.mark.parametrize("case", [_shop, _shop_title_embedding, _taobao],
                         ids=["example-shop", "example-shop-title-embedding", "taobao-format"])
def test_whole_pipeline_on_a_declared_dataset(case, tmp_path):
    params = case(tmp_path)
    result = run_pipeline(params["dataset"], params["day"], tmp_path / "home", tmp_path / "onnx", params["source"], params["data_dir"])
    spec = load_spec(params["dataset"])
    db = tmp_path / "home" / "atnn.duckdb"

    assert all(c["read"] == c["accepted"] + c["quarantined"] for c in result["ingest"]["counts"].values())
    train = result["train"]
    assert train["promoted"] and train["onnx_max_abs_diff"] <= 1e-5 and train["train_items"] > 0
    # The ONNX input schema is the spec's item inputs, shaped by their options.
    metadata = json.loads((Path(train["onnx_path"]).parent / "metadata.json").read_text())
    expected = []
    for f in spec.item_inputs:
        if f.kind == "numeric" and not f.buckets:
            expected.append([f.name, "float32", ["batch", "2"]])
        elif f.is_sequence:
            expected.append([f.name, "int64", ["batch", str(f.max_len)]])
        else:
            expected.append([f.name, "int64", ["batch"]])
    expected += [[f.embedding_input, "float32", ["batch", "384"]] for f in spec.item_inputs if f.embedding]
    assert [[i["name"], i["dtype"], i["shape"]] for i in metadata["inputs"]] == expected
    assert metadata["spec_hash"] == spec.schema_hash()

    # The ranked day holds exactly that day's new arrivals, with the spec's display fields.
    arrivals = read_sql(db, "SELECT item_id FROM items WHERE listed_at::DATE = ? ORDER BY item_id", [params["day"]])
    ranked = read_sql(db, "SELECT * FROM rankings WHERE ds = ? ORDER BY rank", [params["day"]])
    assert len(arrivals) >= 3 and result["rank"]["ranked"] == len(arrivals)
    assert sorted(ranked["item_id"]) == arrivals["item_id"].tolist()
    assert ranked["score"].between(0, 1).all() and ranked["score"].is_monotonic_decreasing
    assert ranked["category"].notna().all()
    assert ranked["title"].notna().all() == (spec.title_field is not None)


def test_daily_drops_through_the_flows(tmp_path):
    from flows.daily_rank import daily_rank
    from flows.ingest import ingest

    params = _shop(tmp_path)
    home, folder = tmp_path / "home", Path(params["source"])
    run_pipeline(params["dataset"], params["day"], home, tmp_path / "onnx", params["source"], None)
    common = {"dataset": params["dataset"], "profile": "test", "home": str(home)}

    first = ingest(**common, drop=str(folder / "drops"))
    assert [d["ds"] for d in first["drops"]] == ["2024-03-15"] and first["counts"]["items"]["accepted"] == 3
    again = ingest(**common, drop=str(folder / "drops" / "2024-03-15"))
    assert again["drops"][0]["already_ingested"] and again["counts"] == {}

    # The drop's profiles were materialized into the online store.
    settings = load_settings(profile="test", dataset=params["dataset"], home=home)
    spec = load_spec(params["dataset"])
    online = store.online_item_profiles(settings, spec, ["p13", "p14", "p15"])
    assert online["category"].tolist() == ["sports", "home", "fashion"]

    # Ranking the drop ranks exactly its new items, on its day; by folder of drops and date too.
    report = daily_rank(**common, drop=str(folder / "drops" / "2024-03-15"))
    assert report["ds"] == "2024-03-15" and report["ranked"] == 3
    again = daily_rank(**common, drop=str(folder / "drops"), date="2024-03-15")
    assert again["ranked"] == 3
    ranked = read_sql(home / "atnn.duckdb", "SELECT item_id FROM rankings WHERE ds = '2024-03-15' ORDER BY item_id")
    assert ranked["item_id"].tolist() == ["p13", "p14", "p15"]
