"""Prefect artifacts the flows publish: what a user sees in the UI after each run (no flow here)."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from atnn.warehouse import read_sql


def png_markdown(path: Path, alt: str) -> str:
    """Markdown showing a PNG inline (a data URL: the UI needs no file server) and naming its file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})\n\nFile: `{path}`\n"


def publish_rank_artifacts(db: Path, report) -> dict:
    """Top 20 of the ranked day (title, category, score) and a markdown summary of the run."""
    top = read_sql(
        db,
        "SELECT rank, item_id, title, category, round(score, 4) AS score FROM rankings WHERE ds = ? ORDER BY rank LIMIT 20",
        [report.ds],
    )
    table = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in top.astype(object).to_dict("records")]
    table_id = create_table_artifact(key="daily-rank-top", table=table, description=f"top 20 new arrivals of {report.ds}")
    scores = read_sql(db, "SELECT score FROM rankings WHERE ds = ?", [report.ds])["score"]
    if len(scores):
        q = scores.quantile([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
        distribution = (
            "| min | p10 | p25 | median | p75 | p90 | max | mean |\n|---|---|---|---|---|---|---|---|\n| "
            + " | ".join(f"{v:.4f}" for v in [*q.to_numpy(), scores.mean()]) + " |\n"
        )
    else:
        distribution = "no item ranked\n"
    reasons = "\n".join(f"  - {reason}: {n}" for reason, n in report.skipped_reasons.items()) or "  - none"
    markdown = (
        f"# New arrivals of {report.ds}\n\n"
        f"- new arrivals: {report.new_arrivals}\n- ranked: {report.ranked}\n- model version: {report.model_version}\n"
        f"- skipped: {report.skipped}\n{reasons}\n- ranking took {report.seconds:.2f} s\n\n"
        f"## Score distribution (predicted popularity)\n\n{distribution}"
    )
    summary_id = create_markdown_artifact(key="daily-rank-summary", markdown=markdown,
                                          description=f"daily-rank {report.ds}")
    return {"table": str(table_id), "summary": str(summary_id), "top": table}


def publish_train_artifacts(report, curve_png: Path) -> None:
    """The model's metrics (a table) and its learning curve (a PNG in markdown)."""
    create_table_artifact(
        key="train-metrics",
        table=[{"metric": k, "value": v} for k, v in report.metrics().items()]
        + [{"metric": "promoted_to_champion", "value": report.promoted}, {"metric": "data_as_of", "value": report.as_of}],
        description=f"model {report.model_name} {report.version}",
    )
    create_markdown_artifact(
        key="train-learning-curve",
        markdown=f"# Learning curve of {report.model_name} {report.version}\n\n" + png_markdown(curve_png, "learning curve"),
        description=f"model {report.model_name} {report.version}",
    )


def publish_quality_artifacts(report, table: pd.DataFrame, chart_png: Path) -> None:
    """The monthly quality series (a table) and the quality-over-time chart."""
    monthly = table[table["grain"] == "month"].sort_values("ds")
    rows = [
        {"month": str(r.ds)[:7], "model_version": r.model_version, "n_items": int(r.n_items),
         "spearman": None if pd.isna(r.spearman) else round(float(r.spearman), 4),
         "ndcg_at_10": None if pd.isna(r.ndcg_at_10) else round(float(r.ndcg_at_10), 4),
         "precision_at_10pct": None if pd.isna(r.precision_at_10pct) else round(float(r.precision_at_10pct), 4)}
        for r in monthly.itertuples()
    ]
    create_table_artifact(key="ranking-quality-monthly", table=rows, description="ranking quality, pooled per month")
    create_markdown_artifact(
        key="ranking-quality-chart",
        markdown=(
            f"# Ranking quality over time\n\n- days evaluated: {report.evaluated_days} (pending: {report.pending_days})\n"
            f"- rows: {report.day_rows} days, {report.month_rows} months\n"
            f"- mean monthly Spearman: {report.mean_monthly_spearman:.4f}\n- outcomes known until: {report.outcomes_until}\n\n"
            + png_markdown(chart_png, "ranking quality over time")
        ),
        description="evaluate",
    )
