"""`make bench-speed`: how close the daily path gets to the machine's limit, on SYNTHETIC data.

Writes benchmarks/speed.json and benchmarks/speed.md. Every stage runs in its own subprocess, so its
peak RSS (resource.getrusage, the process's high-water mark) is its own; each figure is the median
over `runs` subprocesses, and each ratio is computed within one run before taking the median.

Stages:
- daily_rank_1m: the daily ranking of 1M new arrivals into DuckDB (`pipeline.rank_day` with the flow's
  bulk reader), per stage; then, in the same process, the scoring floor: onnxruntime alone on the
  same in-memory encoded batch;
- feature_read: the Feast options for the bulk profile read (get_historical_features through the
  DuckDB offline store, get_online_features from SQLite, the DuckDB point-in-time read);
- mean_vector: the O(1) mean-vector score against the exact average over users (10,000 x 100,000);
- training_20m: Algorithm 1 streamed over 20M events (one pass), events/s and peak RSS;
- dask: the daily-rank flow with its scoring partitioned on a Dask LocalCluster, next to the same
  flow in process, and whether the two rankings are identical.

The data is made by `atnn synth` once into var/synth (ignored by git) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from atnn.config import PROJECT_ROOT, Settings, load_settings
from atnn.spec import load_spec

SYNTH = {"users": 1_000_000, "items": 1_000_000, "days": 30, "seed": 0, "events": 50_000_000, "arrivals": 1_000_000}
STAGES = ("daily_rank_1m", "feature_read", "mean_vector", "training_20m", "dask")


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _settings(home: Path, synth: Path) -> Settings:
    return load_settings(home=home, onnx_dir=home / "onnx", dataset=str((synth / "spec.yaml").resolve()))


def _arrival_day(synth: Path) -> date:
    return date.fromisoformat(json.loads((synth / "synth.json").read_text())["arrival_day"])


# ---------------------------------------------------------------- setup (once, reused)


def prepare(home: Path, synth: Path, *, train_events: int = 3_000_000) -> None:
    """Make the SYNTHETIC data, load it, apply Feast and train the ranking model, unless done."""
    from atnn import registry, scale, store, synth as synth_mod

    if not (synth / "synth.json").is_file():
        synth_mod.generate(synth, **SYNTH)
    settings = _settings(home, synth)
    spec = load_spec(settings.dataset)
    if not settings.paths.db.is_file() or not (settings.paths.canonical_dir / "items.parquet").is_file():
        scale.load_bulk(settings, spec, synth)
    if not (settings.paths.feast_home / "registry.db").is_file():
        store.apply(settings, spec)
    try:
        registry.champion_dir(settings.paths.db, spec)
    except Exception:
        trained = settings.with_overrides(**{"train.epochs": 1, "train.batch_size": 2048, "train.threads": 1})
        scale.train_streaming(trained, spec, datetime.combine(_arrival_day(synth), datetime.min.time()), max_events=train_events)


# ---------------------------------------------------------------- stages (each in a child process)


def stage_daily_rank(home: Path, synth: Path) -> dict[str, Any]:
    # Imports are not the ranking's cost (a worker imports them once): Feast and its DuckDB offline
    # store (ibis, about 0.5 s), which opening the feature store's config loads.
    import feast  # noqa: F401
    import feast.infra.offline_stores.duckdb  # noqa: F401
    import pyarrow.parquet as pq
    from scipy.stats import spearmanr

    from atnn import pipeline, registry, store
    from atnn.scoring import OnnxScorer
    from atnn.warehouse import read_sql
    from flows.common import ranking_reader

    settings = _settings(home, synth)
    spec = load_spec(settings.dataset)
    ds = _arrival_day(synth)
    report = pipeline.rank_day(settings, spec, ds, ranking_reader(settings, spec), neighbours=False)
    peak = _peak_rss_gib()
    # The floor: onnxruntime alone on the same items, already encoded in memory, same batches.
    scorer = OnnxScorer(registry.champion_dir(settings.paths.db, spec))
    arrivals = read_sql(settings.paths.db, "SELECT item_id, listed_at FROM items WHERE listed_at::DATE = ? ORDER BY item_id", [ds])
    profiles = store.point_in_time_features(settings, spec, arrivals[["item_id"]].assign(event_timestamp=pipeline.ranking_time(ds, arrivals)), "atnn_ranking")
    inputs = scorer.encoder.encode(profiles, "item")
    t0 = time.perf_counter()
    scorer.run(inputs)
    floor = time.perf_counter() - t0
    ranked = read_sql(settings.paths.db, "SELECT item_id, score FROM rankings WHERE ds = ?", [ds])
    truth = pq.read_table(synth / "planted_popularity.parquet").to_pandas()
    joined = ranked.merge(truth, on="item_id")
    return {
        "items": report.ranked, "wall_s": report.seconds, "peak_rss_gib": peak, "floor_s": floor,
        "ratio_to_floor": report.seconds / floor, "stages": report.stages,
        "spearman_planted": float(spearmanr(joined["score"], joined["popularity"]).statistic),
    }


def stage_feature_read(home: Path, synth: Path, option: str, n: int) -> dict[str, Any]:
    import feast  # noqa: F401

    from atnn import pipeline, store
    from atnn.warehouse import read_sql

    settings = _settings(home, synth)
    spec = load_spec(settings.dataset)
    ds = _arrival_day(synth)
    arrivals = read_sql(settings.paths.db, "SELECT item_id, listed_at FROM items WHERE listed_at::DATE = ? ORDER BY item_id LIMIT ?", [ds, n])
    entities = arrivals[["item_id"]].assign(event_timestamp=pipeline.ranking_time(ds, arrivals))
    if option == "online":
        feature_store = store.open_store(settings, spec)
        rows = store.point_in_time_features(settings, spec, entities, "atnn_ranking", arrow_strings=False)
        rows["listed_at"] = arrivals["listed_at"].dt.tz_localize("UTC")
        t0 = time.perf_counter()
        feature_store.write_to_online_store("item_profile", rows.drop(columns="event_timestamp"))
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = store.online_item_profiles(settings, spec, entities["item_id"].tolist())
        seconds = time.perf_counter() - t0
        return {"option": option, "items": n, "seconds": seconds, "materialize_s": write_s, "rows": len(out), "peak_rss_gib": _peak_rss_gib()}
    reader = {"historical": store.historical_features, "point_in_time": store.point_in_time_features}[option]
    t0 = time.perf_counter()
    out = reader(settings, spec, entities, "atnn_ranking")
    seconds = time.perf_counter() - t0
    return {"option": option, "items": n, "seconds": seconds, "rows": len(out), "nulls": int(out["category"].isna().sum()),
            "peak_rss_gib": _peak_rss_gib()}


def stage_mean_vector(home: Path, synth: Path, n_items: int = 10_000, n_users: int = 100_000) -> dict[str, Any]:
    import torch
    from scipy.stats import spearmanr

    from atnn import artifacts, pipeline, store
    from atnn.warehouse import read_sql

    torch.set_num_threads(1)
    settings = _settings(home, synth)
    spec = load_spec(settings.dataset)
    ds = _arrival_day(synth)
    path = read_sql(settings.paths.db, "SELECT checkpoint_path FROM models WHERE champion ORDER BY created_at DESC LIMIT 1")
    checkpoint = artifacts.load_checkpoint(Path(path["checkpoint_path"].iloc[0]))
    model, encoder = checkpoint.model.eval(), checkpoint.encoder
    arrivals = read_sql(settings.paths.db, "SELECT item_id, listed_at FROM items WHERE listed_at::DATE = ? ORDER BY hash(item_id) LIMIT ?", [ds, n_items])
    profiles = store.point_in_time_features(settings, spec, arrivals[["item_id"]].assign(event_timestamp=pipeline.ranking_time(ds, arrivals)), "atnn_ranking")
    users = read_sql(settings.paths.db, "SELECT * FROM users ORDER BY hash(user_id) LIMIT ?", [n_users])
    with torch.no_grad():
        items = model.generator({k: torch.from_numpy(v) for k, v in encoder.encode(profiles, "item").items()})
        user_vectors = model.user_encoder({k: torch.from_numpy(v) for k, v in encoder.encode(users, "user").items()})
        h = model.interaction
        weight, item_bias = h.weight, h.item_bias.weight[0]
        user_bias_w, user_bias_b = h.user_bias.weight[0], h.user_bias.bias[0]

        def mean_vector() -> torch.Tensor:  # O(1) per item: H against the mean user vector
            u = user_vectors.mean(0)
            return torch.sigmoid(items @ (weight * u) + items @ item_bias + u @ user_bias_w + user_bias_b)

        def exact(chunk: int = 5000) -> torch.Tensor:  # O(users) per item: the average of sigmoid(H)
            total = torch.zeros(len(items), dtype=torch.float64)
            item_part = items @ item_bias
            for start in range(0, len(user_vectors), chunk):
                u = user_vectors[start : start + chunk]
                logits = (items * weight) @ u.T + item_part[:, None] + (u @ user_bias_w + user_bias_b)[None, :]
                total += torch.sigmoid(logits).sum(1, dtype=torch.float64)
            return total / len(user_vectors)

        t0 = time.perf_counter()
        approx = mean_vector()
        mean_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        truth = exact()
        exact_s = time.perf_counter() - t0
    return {"items": len(items), "users": len(user_vectors), "mean_vector_s": mean_s, "exact_s": exact_s,
            "speedup": exact_s / mean_s, "spearman": float(spearmanr(approx.numpy(), truth.numpy()).statistic),
            "peak_rss_gib": _peak_rss_gib()}


def stage_training(home: Path, synth: Path, events: int = 20_000_000, batch_size: int = 4096) -> dict[str, Any]:
    from atnn import scale

    settings = _settings(home, synth).with_overrides(**{"train.epochs": 1, "train.batch_size": batch_size, "train.threads": 1})
    spec = load_spec(settings.dataset)
    as_of = datetime.combine(_arrival_day(synth), datetime.min.time())
    report, throughput = scale.train_streaming(settings, spec, as_of, max_events=events, register=False)
    chunks = throughput.pop("chunk_events_per_s")
    return {
        "events": throughput["events"], "events_trained": throughput["events_seen"], "batch_size": batch_size, "threads": 1,
        "events_per_s": statistics.median(chunks), "events_per_s_pass": throughput["events_per_s"],
        "chunk_events_per_s_min_max": [min(chunks), max(chunks)], "chunks": len(chunks),
        "total_s": throughput["total_s"], "validation_auc_generator": report.validation_auc_generator,
        "peak_rss_gib": _peak_rss_gib(),
    }


def stage_dask(home: Path, synth: Path, partitions: int = 4, workers: int = 2) -> dict[str, Any]:
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    import feast  # noqa: F401

    from atnn.scale import ranks_identical
    from atnn.warehouse import read_sql
    from flows.daily_rank import daily_rank

    settings = _settings(home, synth)
    ds = _arrival_day(synth)
    common = {"date": ds.isoformat(), "dataset": settings.dataset, "home": str(home), "neighbours": False}
    sql = "SELECT item_id, score, rank FROM rankings WHERE ds = ?"
    daily_rank(**common, partitions=1)  # warm-up: the Prefect server and this process's imports
    t0 = time.perf_counter()
    in_process = daily_rank(**common, partitions=1)
    in_process_s = time.perf_counter() - t0
    first = read_sql(settings.paths.db, sql, [ds])
    t0 = time.perf_counter()
    distributed = daily_rank(**common, partitions=partitions, task_runner="dask", dask_address="")
    dask_s = time.perf_counter() - t0
    second = read_sql(settings.paths.db, sql, [ds])
    return {"items": in_process["ranked"], "partitions": partitions, "workers": workers, "wall_s": dask_s,
            "in_process_wall_s": in_process_s, "identical_ranks": ranks_identical(first, second),
            "rank_seconds_in_process": in_process["seconds"], "rank_seconds_dask": distributed["seconds"],
            "peak_rss_gib_flow_process": _peak_rss_gib()}


def _child(stage: str, home: Path, synth: Path, extra: dict[str, Any]) -> dict[str, Any]:
    if stage == "daily_rank_1m":
        return stage_daily_rank(home, synth)
    if stage == "feature_read":
        return stage_feature_read(home, synth, extra["option"], int(extra["n"]))
    if stage == "mean_vector":
        return stage_mean_vector(home, synth)
    if stage == "training_20m":
        return stage_training(home, synth)
    if stage == "dask":
        return stage_dask(home, synth)
    raise ValueError(f"unknown stage {stage!r}")


# ---------------------------------------------------------------- the parent: runs, medians, files


def _run_child(stage: str, home: Path, synth: Path, extra: dict[str, Any] | None = None, timeout_s: float = 3600) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    cmd = [sys.executable, "-m", "atnn.speed", "--child", stage, "--home", str(home), "--synth", str(synth),
           "--extra", json.dumps(extra or {})]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"stage {stage} failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in runs))


def _median_stages(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = sorted({k for r in runs for k in r["stages"]})
    return {k: float(statistics.median(r["stages"].get(k, 0.0) for r in runs)) for k in keys}


def measure(stage: str, home: Path, synth: Path, runs: int) -> dict[str, Any]:
    if stage == "daily_rank_1m":
        results = [_run_child(stage, home, synth) for _ in range(runs)]
        out = {k: _median(results, k) for k in ("wall_s", "peak_rss_gib", "floor_s", "ratio_to_floor", "spearman_planted")}
        return {"items": results[0]["items"], **out, "stages": _median_stages(results), "runs": results}
    if stage == "feature_read":
        options = {}
        for option, n in (("point_in_time", 1_000_000), ("historical", 1_000_000), ("online", 20_000)):
            results = [_run_child(stage, home, synth, {"option": option, "n": n}) for _ in range(runs)]
            seconds = _median(results, "seconds")
            options[option] = {"items": n, "seconds": seconds, "seconds_per_1m_items": seconds * 1_000_000 / n,
                               "peak_rss_gib": _median(results, "peak_rss_gib"), "runs": results}
        options["chosen"] = min((k for k in options), key=lambda k: options[k]["seconds_per_1m_items"])
        return options
    if stage == "mean_vector":
        results = [_run_child(stage, home, synth) for _ in range(runs)]
        return {"items": results[0]["items"], "users": results[0]["users"],
                **{k: _median(results, k) for k in ("speedup", "spearman", "mean_vector_s", "exact_s", "peak_rss_gib")}, "runs": results}
    if stage == "training_20m":
        results = [_run_child(stage, home, synth, timeout_s=4 * 3600) for _ in range(runs)]
        medians = {k: _median(results, k) for k in ("events_per_s", "events_per_s_pass", "peak_rss_gib", "total_s", "validation_auc_generator")}
        return {**{k: v for k, v in results[0].items() if k not in medians}, **medians, "runs": results,
                "runs_note": "each run is one streamed pass over the 20M events; a run's events_per_s is the median over its 1M-event chunks"}
    if stage == "dask":
        results = [_run_child(stage, home, synth) for _ in range(runs)]
        return {"items": results[0]["items"], "partitions": results[0]["partitions"], "workers": results[0]["workers"],
                "wall_s": _median(results, "wall_s"), "in_process_wall_s": _median(results, "in_process_wall_s"),
                "identical_ranks": all(r["identical_ranks"] for r in results), "runs": results}
    raise ValueError(stage)


def _machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in load],
            "note": "2-core machine shared with other jobs during the run: figures include that contention"}


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = ["# Speed on SYNTHETIC data (`make bench-speed`)", "",
             f"Data: `atnn synth` ({result.get('synth', {})}); machine: {result.get('machine', {})}.", ""]
    d = result.get("daily_rank_1m")
    if d:
        lines += ["## Daily rank of 1M new arrivals into DuckDB", "",
                  "| wall s | peak RSS GiB | scoring floor s | ratio to floor | Spearman vs planted |", "| --- | --- | --- | --- | --- |",
                  f"| {d['wall_s']:.2f} | {d['peak_rss_gib']:.2f} | {d['floor_s']:.2f} | {d['ratio_to_floor']:.2f} | {d['spearman_planted']:.3f} |", "",
                  "Stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in d["stages"].items()), ""]
    f = result.get("feature_read")
    if f:
        lines += ["## Bulk profile read: the Feast options", "", "| option | items | s | s per 1M items | peak RSS GiB |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {k} | {v['items']} | {v['seconds']:.2f} | {v['seconds_per_1m_items']:.1f} | {v['peak_rss_gib']:.2f} |"
                  for k, v in f.items() if isinstance(v, dict)]
        lines += ["", f"Chosen: `{f['chosen']}` (same rows as get_historical_features, tested).", ""]
    m = result.get("mean_vector")
    if m:
        lines += ["## Mean-vector score vs exact average over users", "",
                  f"{m['items']} items x {m['users']} users: speedup {m['speedup']:.0f}x, Spearman {m['spearman']:.4f} "
                  f"(mean-vector {m['mean_vector_s'] * 1000:.2f} ms, exact {m['exact_s']:.2f} s).", ""]
    t = result.get("training_20m")
    if t:
        lines += ["## Streamed training", "",
                  f"{t['events']} events, batch {t['batch_size']}, {t['threads']} thread: {t['events_per_s']:.0f} events/s "
                  f"(median over runs of each run's median over {t['chunks']} chunks), peak RSS {t['peak_rss_gib']:.2f} GiB, "
                  f"{t['total_s']:.0f} s a run; {len(t.get('runs', [t]))} run(s).", ""]
    k = result.get("dask")
    if k:
        lines += ["## Scale-out on Dask", "",
                  f"{k['items']} items in {k['partitions']} partitions on a LocalCluster of {k['workers']} workers: "
                  f"{k['wall_s']:.1f} s (flow in process: {k['in_process_wall_s']:.1f} s); identical ranks: {k['identical_ranks']}.", ""]
    lines += ["Rerun: `make bench-speed` (README, \"Scale\"). Every figure is a median of the runs in speed.json."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(stages: list[str], output: Path, *, home: Path, synth: Path, runs: int = 3) -> dict[str, Any]:
    """Measure `stages` (after the one-time setup) and merge them into `output` (+ its .md)."""
    prepare(home, synth)
    output.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(output.read_text()) if output.is_file() else {}
    result["synth"] = {**SYNTH, "synthetic": True}
    for stage in stages:
        started = time.perf_counter()
        result[stage] = measure(stage, home, synth, runs)
        result[stage]["measured_at"] = datetime.utcnow().isoformat(timespec="seconds") + "Z"
        result[stage]["stage_seconds"] = round(time.perf_counter() - started, 1)
        result["machine"] = _machine()
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        write_markdown(result, output.with_suffix(".md"))
        print(f"{stage}: done in {result[stage]['stage_seconds']} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atnn bench-speed")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks" / "speed.json")
    parser.add_argument("--home", type=Path, default=PROJECT_ROOT / "var" / "synth" / "bench-home")
    parser.add_argument("--synth", type=Path, default=PROJECT_ROOT / "var" / "synth" / "shop-1m")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    home, synth = args.home.resolve(), args.synth.resolve()
    if args.child:
        print(json.dumps(_child(args.child, home, synth, json.loads(args.extra)), default=float), flush=True)
        return 0
    run([s.strip() for s in args.stages.split(",") if s.strip()], args.output, home=home, synth=synth, runs=args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
