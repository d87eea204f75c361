"""Which store and broker errors are outages (retried) and which stop the service; the retry backoff."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import (DatabaseError, DataError, OperationalError, ProgrammingError,
                                                   StreamFailureError)

from driftline.connectors.clickhouse import StoreError, StoreUnavailable, store_error, transient_reason
from driftline.streaming.outages import Backoff


@pytest.mark.parametrize("exc", [
    OperationalError("Error ('Connection aborted.', ConnectionResetError(104)) executing HTTP request attempt 2"),
    StreamFailureError("stream failed"),
    DatabaseError("Code: 159. DB::Exception: Timeout exceeded. (TIMEOUT_EXCEEDED)", code=159),
    DatabaseError("Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)", code=241),
    DatabaseError("Code: 252. DB::Exception: Too many parts. (TOO_MANY_PARTS)", code=252),
    DatabaseError("HTTP driver received HTTP status 503, server response: busy"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError("timed out"),
])
def test_outages_are_transient(exc: Exception) -> None:
    assert transient_reason(exc) is not None
    error = store_error("insert failed", exc)
    assert isinstance(error, StoreUnavailable) and error.reason


@pytest.mark.parametrize("exc", [
    DatabaseError("Code: 60. DB::Exception: Unknown table. (UNKNOWN_TABLE)", code=60),
    DatabaseError("Code: 62. DB::Exception: Syntax error. (SYNTAX_ERROR)", code=62),
    DatabaseError("Code: 516. DB::Exception: Authentication failed. (AUTHENTICATION_FAILED)", code=516),
    DatabaseError("HTTP driver received HTTP status 401"),
    ProgrammingError("The client has been closed"),
    DataError("value out of range", code=159),  # a subclass: the data is at fault, whatever the code
    TypeError("a bug"),
    ValueError("a bug"),
])
def test_the_callers_faults_are_not(exc: Exception) -> None:
    assert transient_reason(exc) is None
    assert type(store_error("insert failed", exc)) is StoreError


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.failed() == 0.5
