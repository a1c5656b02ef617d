"""The daily-rank flow scaled out: partitions scored on a Dask LocalCluster (prefect-dask) and on threads
rank the day exactly as the in-process flow does."""

import pytest
from prefect.testing.utilities import prefect_test_harness

from atnn.warehouse import read_sql

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _day(settings, ds):
    return read_sql(settings.paths.db, "SELECT item_id, score, rank, model_version FROM rankings WHERE ds = ? ORDER BY item_id", [ds])


def test_dask_and_threads_give_the_in_process_ranking(synth_home):
    from atnn.scale import ranks_identical
    from flows.daily_rank import daily_rank

    settings, spec, ds = synth_home
    common = {"date": ds.isoformat(), "dataset": settings.dataset, "profile": "test", "home": str(settings.paths.home)}
    in_process = daily_rank(**common, partitions=1)
    whole = _day(settings, ds)
    assert in_process["ranked"] == len(whole) == 700

    on_dask = daily_rank(**common, partitions=3, task_runner="dask")
    dask_day = _day(settings, ds)
    assert on_dask["ranked"] == 700 and on_dask["stages"]["partitioned_s"] > 0
    assert ranks_identical(whole, dask_day) and (whole["model_version"] == dask_day["model_version"]).all()

    on_threads = daily_rank(**common, partitions=2, task_runner="threads")
    assert on_threads["ranked"] == 700 and ranks_identical(whole, _day(settings, ds))


def test_unknown_task_runner_is_refused(synth_home):
    from flows.daily_rank import daily_rank

    settings, _, ds = synth_home
    with pytest.raises(ValueError, match="unknown task_runner 'spark'"):
        daily_rank(date=ds.isoformat(), dataset=settings.dataset, profile="test", home=str(settings.paths.home),
                   partitions=2, task_runner="spark")
