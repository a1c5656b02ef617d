"""Flow behaviour: transient failures are retried with backoff, permanent ones fail at once."""

import pytest
from prefect import flow, task
from prefect.testing.utilities import prefect_test_harness

from atnn.warehouse import WarehouseBusy, is_transient
from flows.common import RETRY

pytestmark = pytest.mark.slow
CALLS: dict[str, int] = {}


@task(**{**RETRY, "retry_delay_seconds": 0})
def flaky(name: str, error: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    if CALLS[name] < 3:
        raise WarehouseBusy("var/atnn.duckdb stayed locked") if error == "busy" else ValueError("column 'genres' is missing")
    return CALLS[name]


@flow
def run(name: str, error: str) -> int:
    return flaky(name, error)


def test_transient_is_retried_and_permanent_is_not():
    with prefect_test_harness(server_startup_timeout=120):
        assert run("busy", "busy") == 3  # two locked attempts, then success
        with pytest.raises(ValueError, match="column 'genres' is missing"):
            run("bad", "value")
    assert CALLS["bad"] == 1  # no retry of a permanent error


def test_is_transient_classification():
    import duckdb

    assert is_transient(WarehouseBusy("x"))
    assert is_transient(duckdb.IOException('Could not set lock on file "a.duckdb": Conflicting lock is held'))
    assert not is_transient(duckdb.IOException("No such file"))
    assert not is_transient(ValueError("bad"))
    assert not is_transient(None)
