"""Flow `score-partitions`: score a day's new arrivals partition by partition on Prefect's task runner.

Called by `daily-rank` when `partitions` > 1, with the runner chosen by configuration
(atnn.config.ScaleConfig): threads in the flow's process, or prefect-dask on a Dask cluster (the
scheduler at `dask_address`, else a LocalCluster). Each task reads its partition's profiles from the
feature store and scores them where it runs; only scores and the rankings' columns come back.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE

from atnn import scale
from atnn.config import ScaleConfig
from flows.common import RETRY, ranking_reader


def task_runner_for(config: ScaleConfig):
    """The task runner named by the configuration."""
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": config.dask_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None},
        )
    if config.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(1, config.partitions))
    raise ValueError(f"unknown task_runner {config.task_runner!r}: use 'threads' or 'dask'")


@task(cache_policy=NO_CACHE, **RETRY)
def score_partition(settings, spec, model_dir: str, arrivals: pd.DataFrame, as_of: datetime, keep_vectors: bool, threads: int):
    scorer = scale.cached_scorer(model_dir, threads)
    return scale.score_partition(scorer, arrivals, as_of, ranking_reader(settings, spec), keep_vectors=keep_vectors)


@flow(name="score-partitions")
def score_partitions(settings, spec, model_dir: str, parts: list[pd.DataFrame], as_of: datetime, keep_vectors: bool):
    """(scored, skipped, stage seconds) of each partition, in partition order."""
    threads = 1 if settings.scale.task_runner == "dask" else 0
    futures = score_partition.map(
        unmapped(settings), unmapped(spec), unmapped(model_dir), parts, unmapped(as_of), unmapped(keep_vectors), unmapped(threads)
    )
    return [future.result() for future in futures]


def run_partitioned(settings, spec, model_dir: str, parts: list[pd.DataFrame], as_of: datetime, keep_vectors: bool):
    """`score_partitions` on the configured task runner."""
    runner = task_runner_for(settings.scale)
    return score_partitions.with_options(task_runner=runner)(settings, spec, model_dir, parts, as_of, keep_vectors)
