"""The `atnn` command: run the pipeline's flows, rank a day, query the warehouse."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from atnn.config import PROJECT_ROOT, load_settings


def _prefect_env(home: Path) -> None:
    """Prefect needs no internet and keeps its state with the project unless told otherwise."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # The temporary server of an in-process run may start slowly on a loaded 2-core machine (default 20 s).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if "PREFECT_API_URL" not in os.environ:
        from atnn.service import check_profile

        check_profile(Path(os.environ["PREFECT_HOME"]))


def _dataset(value: str) -> str:
    """A spec name stays a name; a spec file's path becomes absolute (flows may run elsewhere)."""
    path = Path(value)
    return str(path.resolve()) if path.suffix in (".yaml", ".yml") else value


def _checked(parse, form: str):
    """An argparse type that refuses a value `parse` cannot read, before any flow starts; keeps the text."""

    def check(value: str) -> str:
        try:
            parse(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{value!r} is not {form} ({error})") from None
        return value

    return check


def _day(value: str) -> str:
    """--date: a calendar day."""
    from datetime import date

    return _checked(date.fromisoformat, "a day YYYY-MM-DD")(value)


def _moment(value: str) -> str:
    """--as-of: a day or a time, read as the train flow reads it (pandas)."""
    import pandas as pd

    return _checked(pd.Timestamp, "YYYY-MM-DD[THH:MM]")(value)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", default=None, type=_dataset,
        help="a shipped spec name (ml-100k, ml-latest-small, taobao) or the path of your spec YAML (default: ATNN_DATASET or ml-100k)",
    )
    parser.add_argument("--profile", default=None, help="config profile: default or test")
    parser.add_argument("--home", default=None, help="working state directory (default: ATNN_HOME or var/)")


def _print_top(db: Path, ds: str) -> None:
    from atnn.warehouse import read_sql

    top = read_sql(
        db,
        "SELECT rank, item_id, round(score, 4) AS score, title, category FROM rankings WHERE ds = ? ORDER BY rank LIMIT 10",
        [ds],
    )
    print(f"\nTop 10 new arrivals of {ds}:")
    print(top.to_string(index=False) if len(top) else "(no new arrivals that day)")
    # Absolute paths: the hints work from any directory. `atnn sql` opens the file read-only and briefly,
    # so it never holds up a running job (the DuckDB CLI on the live file would).
    home = f" --home {db.parent}" if db.parent != load_settings().paths.home else ""
    atnn = Path(sys.executable).with_name("atnn")
    print("\nSee them with SQL:")
    print(f'  {atnn} sql{home} "SELECT ds, count(*) FROM rankings GROUP BY ds"')
    print(f"  {atnn} sql{home} \"SELECT rank, title, score FROM rankings WHERE ds = '{ds}' ORDER BY rank LIMIT 10\"")


def cmd_demo(args: argparse.Namespace) -> int:
    settings = load_settings(profile=args.profile, dataset=args.dataset, home=args.home, data_dir=args.data_dir)
    _prefect_env(settings.paths.home)
    from flows.demo import demo

    result = demo(
        dataset=settings.dataset, date=args.date, profile=settings.profile, home=str(settings.paths.home),
        data_dir=str(settings.paths.data_dir) if settings.paths.data_dir else None,
    )
    train = result["train"]
    print(
        f"\nModel {train['model_name']} {train['version']}: validation AUC (generator, held-out warm items) "
        f"{train['validation_auc_generator']:.4f}; ONNX vs torch max |diff| {train['onnx_max_abs_diff']:.1e}"
    )
    _print_top(settings.paths.db, result["rank"]["ds"])
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = load_settings(profile=args.profile, dataset=args.dataset, home=args.home, data_dir=args.data_dir)
    _prefect_env(settings.paths.home)
    from flows.ingest import ingest

    report = ingest(dataset=settings.dataset, profile=settings.profile, home=str(settings.paths.home),
                    data_dir=str(settings.paths.data_dir) if settings.paths.data_dir else None,
                    max_bad_share=args.max_bad_share, source=_absolute(args.source), drop=_absolute(args.drop))
    if args.drop:
        for drop in report["drops"]:
            state = "already ingested, nothing changed" if drop["already_ingested"] else (
                f"{drop['new_items']} new items, statistics of {drop['touched_items']} items updated")
            print(f"drop {drop['ds']} ({drop['source']}): {state}")
    print(json.dumps(report["counts"], indent=2))
    return 0


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def cmd_train(args: argparse.Namespace) -> int:
    settings = load_settings(profile=args.profile, dataset=args.dataset, home=args.home)
    _prefect_env(settings.paths.home)
    from flows.train import train

    report = train(dataset=settings.dataset, as_of=args.as_of, profile=settings.profile, home=str(settings.paths.home))
    print(json.dumps({k: report[k] for k in ("version", "validation_auc_generator", "onnx_path", "promoted")}, indent=2))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    settings = load_settings(profile=args.profile, dataset=args.dataset, home=args.home)
    _prefect_env(settings.paths.home)
    from flows.daily_rank import daily_rank

    if not args.date and not args.drop:
        raise SystemExit("atnn rank: give --date YYYY-MM-DD, or --drop DIR (an ingested drop)")
    report = daily_rank(date=args.date, dataset=settings.dataset, profile=settings.profile, home=str(settings.paths.home),
                        drop=_absolute(args.drop))
    print(f"{report['ds']}: {report['ranked']} ranked, {report['skipped']} skipped, model {report['model_version']}")
    _print_top(settings.paths.db, report["ds"])
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from atnn.warehouse import read_sql

    settings = load_settings(home=args.home)
    result = read_sql(settings.paths.db, args.query)
    print(result.to_string(index=False) if len(result) else f"(no rows; columns: {', '.join(map(str, result.columns))})")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    from atnn.warehouse import publish_snapshot

    settings = load_settings(home=args.home)
    target = publish_snapshot(settings.paths.db, Path(args.output) if args.output else None)
    duckdb_cli = Path(sys.executable).with_name("duckdb")
    print(f"snapshot written: {target}\nopen it with: {duckdb_cli} -readonly {target}")
    return 0


def cmd_bench_readers(args: argparse.Namespace) -> int:
    import tempfile

    from atnn.concurrency import measure, write_report

    with tempfile.TemporaryDirectory() as tmp:
        report = measure(Path(tmp) / "readers.duckdb", reads=args.reads, writes=args.writes, rows=args.rows)
    write_report(report, Path(args.output))
    print(Path(args.output).read_text(encoding="utf-8"))
    return 0 if report.reader_failures == 0 and report.torn_reads == 0 else 1


def cmd_synth(args: argparse.Namespace) -> int:
    import time

    from atnn.synth import generate

    started = time.perf_counter()
    summary = generate(Path(args.out), users=args.users, items=args.items, days=args.days, seed=args.seed,
                       events=args.events, arrivals=args.arrivals)
    print(json.dumps(summary, indent=2))
    print(f"SYNTHETIC shop written to {Path(args.out).resolve()} in {time.perf_counter() - started:.1f} s "
          f"(load it with: atnn ingest --dataset {Path(args.out).resolve() / 'spec.yaml'} --source {Path(args.out).resolve()})")
    return 0


def _service(args: argparse.Namespace):
    from atnn.service import Service

    home = Path(args.prefect_home or os.environ.get("PREFECT_HOME") or PROJECT_ROOT / "var" / "prefect").resolve()
    return Service(prefect_home=home, host=args.host, port=args.port)


def cmd_serve(args: argparse.Namespace) -> int:
    from atnn.service import start

    service = _service(args)
    pids = start(service)
    rel = os.path.relpath(service.prefect_home, Path.cwd())
    print(f"Prefect server {service.api_url} (pid {pids['server']}), worker for pool atnn-local (pid {pids['worker']});")
    print(f"deployments of prefect.yaml registered. State and logs: {rel}/")
    print(f"Open the UI: {service.ui_url}")
    print(f"Run a deployment: PREFECT_HOME={rel} .venv/bin/prefect deployment run 'daily-rank/daily' --param date=1998-03-13")
    print("Stop everything: make stop")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from atnn.service import stop

    stopped = stop(_service(args))
    print("nothing was running" if not stopped else
          ", ".join(f"{name} {'stopped' if ok else 'did NOT stop'}" for name, ok in stopped.items()))
    return 0 if all(stopped.values()) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atnn", description="New-arrival popularity ranking with ATNN")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="ingest, train and rank one day on a real dataset, then show the top 10")
    _common(p)
    p.add_argument("--data-dir", default=None, help="raw datasets directory (default: ATNN_DATA_DIR)")
    p.add_argument("--date", default=None, type=_day, help="day to rank, YYYY-MM-DD (default: the busiest arrival day)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", help="validate raw files into canonical tables; apply and materialize Feast")
    _common(p)
    p.add_argument("--data-dir", default=None, help="raw datasets directory (default: ATNN_DATA_DIR)")
    p.add_argument("--max-bad-share", type=float, default=0.05,
                   help="refuse the ingest when more than this share of a table's rows fail validation")
    p.add_argument("--source", default=None, help="folder of the raw files to load (default: <data-dir>/<dataset>)")
    p.add_argument("--drop", default=None,
                   help="append a daily drop (a canonical folder), or every drop in a folder of them, instead of a full load")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("train", help="train ATNN on what was known before --as-of and export it to ONNX")
    _common(p)
    p.add_argument("--as-of", default=None, type=_moment, help="training cut-off, YYYY-MM-DD[THH:MM] (default: now)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("rank", help="rank one day's new arrivals into DuckDB")
    _common(p)
    p.add_argument("--date", default=None, type=_day, help="YYYY-MM-DD (with a folder of drops: whose drop to rank)")
    p.add_argument("--drop", default=None, help="rank exactly the new items of this ingested drop, on its day")
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("snapshot", help="publish a read-only copy of the warehouse for long SQL sessions")
    p.add_argument("--home", default=None)
    p.add_argument("--output", default=None, help="snapshot path (default: var/atnn-snapshot.duckdb)")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("bench-readers", help="measure SQL reads in another process during rank writes")
    p.add_argument("--reads", type=int, default=500)
    p.add_argument("--writes", type=int, default=50)
    p.add_argument("--rows", type=int, default=50_000, help="rows per ranked day")
    p.add_argument("--output", default="benchmarks/readers.json")
    p.set_defaults(func=cmd_bench_readers)

    for name, func, text in (("serve", cmd_serve, "start a local Prefect server + worker and deploy prefect.yaml"),
                             ("stop", cmd_stop, "stop the worker, then the server, started by `atnn serve`")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--prefect-home", default=None, help="Prefect state (default: PREFECT_HOME or var/prefect)")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=int(os.environ.get("ATNN_PREFECT_PORT", "4200")))
        p.set_defaults(func=func)

    p = sub.add_parser("synth", help="write a SYNTHETIC e-commerce shop in the canonical format (scale tests)")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--items", type=int, required=True, help="catalogue items listed over --days")
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--events", type=int, default=None, help="events in all (default: 50 per user)")
    p.add_argument("--arrivals", type=int, default=0, help="new arrivals of the day after --days, as a daily drop")
    p.add_argument("--out", default="var/synth/shop", help="output folder (spec.yaml, Parquet files, drops/)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("bench-speed", add_help=False, help="speed benchmark on SYNTHETIC data (python -m atnn.speed --help)")
    p.set_defaults(func=lambda a: __import__("atnn.speed", fromlist=["main"]).main([]))

    p = sub.add_parser("bench-quality", add_help=False,
                       help="ranking-quality benchmark of every model (python -m atnn.benchmark --help)")
    p.set_defaults(func=lambda a: __import__("atnn.benchmark", fromlist=["main"]).main([]))  # main() forwards options

    p = sub.add_parser("sql", help="run a read-only SQL query on the warehouse")
    p.add_argument("query")
    p.add_argument("--home", default=None)
    p.set_defaults(func=cmd_sql)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _quiet_library_noise()
    if argv[:1] == ["bench-quality"]:  # its own options: python -m atnn.benchmark --help
        from atnn.benchmark import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["bench-speed"]:  # its own options: python -m atnn.speed --help
        from atnn.speed import main as speed_main

        return speed_main(argv[1:])
    args = build_parser().parse_args(argv)
    user_errors = _user_errors()
    try:
        if hasattr(args, "dataset"):
            # A mistake in the spec stops the command before Prefect starts, with the file and field named.
            from atnn.spec import load_spec

            load_spec(args.dataset or os.environ.get("ATNN_DATASET", "ml-100k"))
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except user_errors as error:
        # Errors a user can act on: one line naming the file, field or row, no traceback (Prefect has
        # already logged the failed run, if there was one).
        print(f"atnn {args.command}: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


def _quiet_library_noise() -> None:
    """Warnings a user cannot act on: ibis's deprecation notices inside Feast, and the ONNX exporter's
    note that torchvision (which atnn does not use) is not installed."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def _user_errors() -> tuple[type[BaseException], ...]:
    from atnn.canonical import IngestError
    from atnn.config import ConfigError
    from atnn.drops import DropNotIngested
    from atnn.readers import FormatError
    from atnn.registry import NoChampion
    from atnn.scoring import SchemaMismatch
    from atnn.service import ServiceError
    from atnn.spec import SpecError
    from atnn.warehouse import DatasetMismatch, WarehouseBusy

    return (ConfigError, SpecError, FormatError, IngestError, SchemaMismatch, NoChampion, DropNotIngested,
            DatasetMismatch, WarehouseBusy, ServiceError)


if __name__ == "__main__":
    sys.exit(main())
