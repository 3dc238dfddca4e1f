"""Prefect fixtures shared by every stage's tests: ONE test harness per session (it costs ~10 s).

`prefect_harness` starts Prefect's test harness (a temporary SQLite database under a temporary
PREFECT_HOME, a local server) once for the whole session; any test that runs a flow or task asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory) -> Iterator[str]:
    """Yield the temporary PREFECT_HOME of a session-wide Prefect test harness."""
    home = tmp_path_factory.mktemp("prefect-home")
    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    from tasks.common import apply_prefect_defaults

    apply_prefect_defaults()
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield str(home)
    finally:
        if old is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = old


@pytest.fixture
def prefect_client(prefect_harness):
    """A synchronous Prefect client against the harness's server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client
