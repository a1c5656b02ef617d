"""Closing the loop: how good were past rankings, once their items' outcomes are known?

For every ranked day whose outcome window (30 days after each item's arrival) has passed by the
last event in the warehouse, the realized popularity of its ranked items is measured from the event
log, as in ../shared/PROTOCOL.md: the positive rate of an item's events in its window, smoothed
toward the warm items' mean with a prior of 10 events, for items with at least 5 events. The
predicted scores are compared with it per day (days with at least 5 such items) and pooled per
month (MovieLens has few arrivals a day), into table `ranking_quality`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from atnn.metrics import ndcg_at, precision_at_fraction, spearman
from atnn.protocol import Tables, popularity_truth
from atnn.spec import DatasetSpec
from atnn.warehouse import ensure_schema, read_sql, session

QUALITY_COLUMNS = ["ds", "model_version", "n_items", "spearman", "ndcg_at_10", "precision_at_10pct", "evaluated_at", "grain"]


@dataclass
class EvaluationReport:
    evaluated_days: int
    pending_days: int
    day_rows: int
    month_rows: int
    items_with_outcomes: int
    mean_monthly_spearman: float
    outcomes_until: str


def realized_outcomes(db: Path, horizon_days: int = 30, prior_events: float = 10.0, min_events: int = 5) -> pd.DataFrame:
    """Ranked items of every day whose outcome window has closed, with score and realized popularity.

    Columns: ds, model_version, item_id, score, volume, positives, ctr. The warm rate the positive
    rate is smoothed toward is the mean label of the events before the first evaluated day.
    """
    with session(db, read_only=True) as con:
        last = con.execute("SELECT max(ts) FROM events").fetchall()[0][0]
        ranked = con.execute(
            f"""SELECT r.ds, r.model_version, r.item_id, r.score, r.listed_at FROM rankings r
                WHERE r.listed_at + INTERVAL {int(horizon_days)} DAY <= ? ORDER BY r.ds, r.rank""",
            [last],
        ).df()
        window_events = con.execute(
            f"""SELECT e.user_id, e.item_id, e.ts, e.label FROM events e
                JOIN (SELECT DISTINCT item_id, listed_at FROM rankings) r USING (item_id)
                WHERE e.ts >= r.listed_at AND e.ts < r.listed_at + INTERVAL {int(horizon_days)} DAY""",
        ).df()
        first = ranked["ds"].min() if len(ranked) else None
        warm_rate = con.execute(
            "SELECT coalesce(avg(label::DOUBLE), 0.5) FROM events WHERE ts < ?", [first]
        ).fetchall()[0][0] if first is not None else 0.5
    empty = pd.DataFrame()
    truth = popularity_truth(
        Tables(items=empty, users=empty, events=window_events), ranked["item_id"].unique(),
        warm_rate=warm_rate, prior_events=prior_events, min_events=min_events,
    )
    out = ranked.merge(truth, on="item_id", how="inner").drop(columns="listed_at")
    out.attrs["outcomes_until"] = str(last)
    out.attrs["ranked_days"] = int(ranked["ds"].nunique())
    return out


def quality(group: pd.DataFrame) -> dict[str, float]:
    """Spearman, NDCG@10 and precision@10% of the scores against realized popularity (ctr)."""
    truth, predicted = group["ctr"].to_numpy(float), group["score"].to_numpy(float)
    return {
        "n_items": len(group),
        "spearman": spearman(truth, predicted),
        "ndcg_at_10": ndcg_at(truth, predicted, 10),
        "precision_at_10pct": precision_at_fraction(truth, predicted, 0.1),
    }


def quality_table(outcomes: pd.DataFrame, min_items: int = 5) -> pd.DataFrame:
    """Rows of `ranking_quality`: per day with >= `min_items` items with outcomes, and per month pooled."""
    evaluated_at = datetime.now(timezone.utc).replace(tzinfo=None)
    frames = []
    if len(outcomes):
        outcomes = outcomes.assign(
            ds=pd.to_datetime(outcomes["ds"]), month=pd.to_datetime(outcomes["ds"]).dt.to_period("M").dt.start_time
        )
        for grain, key in (("day", "ds"), ("month", "month")):
            rows = [
                {"ds": ds, "model_version": version, **quality(group)}
                for (ds, version), group in outcomes.groupby([key, "model_version"], sort=True)
                if len(group) >= min_items
            ]
            frames.append(pd.DataFrame(rows).assign(grain=grain) if rows else pd.DataFrame())
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if table.empty:
        return pd.DataFrame(columns=QUALITY_COLUMNS)
    table["ds"] = pd.to_datetime(table["ds"]).dt.date
    table["evaluated_at"] = evaluated_at
    return table[QUALITY_COLUMNS]


def write_quality(db: Path, spec: DatasetSpec, table: pd.DataFrame) -> int:
    """Replace `ranking_quality` with a fresh evaluation, in one transaction."""
    with session(db) as con:
        ensure_schema(con, spec)
        con.register("new_quality", table)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM ranking_quality")
            con.execute(f"INSERT INTO ranking_quality ({', '.join(QUALITY_COLUMNS)}) SELECT {', '.join(QUALITY_COLUMNS)} FROM new_quality")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return len(table)


def evaluate(db: Path, spec: DatasetSpec, *, horizon_days: int = 30, prior_events: float = 10.0,
             min_events: int = 5, min_items: int = 5) -> tuple[EvaluationReport, pd.DataFrame]:
    """Measure every evaluable ranked day and write `ranking_quality`; returns the report and the rows."""
    outcomes = realized_outcomes(db, horizon_days, prior_events, min_events)
    table = quality_table(outcomes, min_items)
    write_quality(db, spec, table)
    ranked_days = int(read_sql(db, "SELECT count(DISTINCT ds) AS n FROM rankings")["n"].iloc[0])
    monthly = table[table["grain"] == "month"]["spearman"].astype(float)
    report = EvaluationReport(
        evaluated_days=int(outcomes.attrs.get("ranked_days", 0)),
        pending_days=ranked_days - int(outcomes.attrs.get("ranked_days", 0)),
        day_rows=int((table["grain"] == "day").sum()),
        month_rows=int((table["grain"] == "month").sum()),
        items_with_outcomes=len(outcomes),
        mean_monthly_spearman=float(np.nanmean(monthly)) if monthly.notna().any() else float("nan"),
        outcomes_until=str(outcomes.attrs.get("outcomes_until", "")),
    )
    return report, table


def quality_chart(table: pd.DataFrame, path: Path, title: str = "Ranking quality over time") -> Path:
    """A PNG of monthly Spearman and NDCG@10 (lines) and items evaluated per month (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monthly = table[table["grain"] == "month"].copy()
    monthly["ds"] = pd.to_datetime(monthly["ds"])
    monthly = monthly.groupby("ds", as_index=False).apply(
        lambda g: pd.Series({
            "spearman": np.average(g["spearman"].fillna(0), weights=g["n_items"]) if g["spearman"].notna().any() else np.nan,
            "ndcg_at_10": np.average(g["ndcg_at_10"].fillna(0), weights=g["n_items"]) if g["ndcg_at_10"].notna().any() else np.nan,
            "n_items": g["n_items"].sum(),
        }), include_groups=False,
    ) if len(monthly) else pd.DataFrame(columns=["ds", "spearman", "ndcg_at_10", "n_items"])
    fig, quality_axis = plt.subplots(figsize=(10, 4.5), dpi=100)
    counts_axis = quality_axis.twinx()
    counts_axis.bar(monthly["ds"], monthly["n_items"], width=20, color="#dddddd", label="items with outcomes")
    counts_axis.set_ylabel("items evaluated per month")
    quality_axis.set_zorder(counts_axis.get_zorder() + 1)
    quality_axis.patch.set_visible(False)
    quality_axis.plot(monthly["ds"], monthly["spearman"], marker="o", label="Spearman (monthly, pooled)")
    quality_axis.plot(monthly["ds"], monthly["ndcg_at_10"], marker="s", label="NDCG@10 (monthly, pooled)")
    quality_axis.axhline(0, color="black", linewidth=0.5)
    quality_axis.set_ylim(-1, 1)
    quality_axis.set_ylabel("score vs realized positive rate")
    mean = monthly["spearman"].mean() if len(monthly) else float("nan")
    quality_axis.set_title(f"{title} (mean monthly Spearman {mean:.3f})")
    quality_axis.legend(loc="lower left")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def learning_curve_chart(history: list[dict], path: Path, title: str = "Learning curve") -> Path:
    """A PNG of the three losses and the generator's validation AUC per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, loss_axis = plt.subplots(figsize=(7, 4), dpi=100)
    for column, label in (("l_i", "L_i (encoder)"), ("l_g", "L_g (generator)"), ("l_s", "L_s (similarity)")):
        if column in frame:
            loss_axis.plot(frame["epoch"], frame[column], marker="o", label=label)
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    auc_axis = loss_axis.twinx()
    if "val_auc_generated" in frame:
        auc_axis.plot(frame["epoch"], frame["val_auc_generated"], color="black", linestyle="--", marker="x",
                      label="validation AUC (generator)")
    auc_axis.set_ylabel("validation AUC")
    handles = loss_axis.get_legend_handles_labels()
    more = auc_axis.get_legend_handles_labels()
    loss_axis.legend(handles[0] + more[0], handles[1] + more[1], loc="center right")
    loss_axis.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
