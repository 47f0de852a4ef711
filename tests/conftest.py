from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import Server, gunicorn_server, redis_server

# The browser fixtures (one Playwright and one Chromium for the whole session: two sync
# Playwright instances cannot be alive in one thread).
pytest_plugins = ["tests.browser"]

os.environ.setdefault("FLASK_TICKER_INTERVAL", "0")  # keep the example app's ticker quiet

# Fixtures that start a server process: a test using one belongs to the slow tier.
SERVER_FIXTURES = frozenset({"core_server", "redis"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep `pytest -m "not slow"` free of servers: a test that uses a server fixture
    without the ``slow`` marker is a collection error, not a slow inner loop."""
    unmarked = [
        item.nodeid
        for item in items
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests using a server fixture must be marked slow: " + ", ".join(unmarked))


@pytest.fixture(scope="module")
def core_server() -> Iterator[Server]:
    """One gunicorn gevent worker running tests/apps/core_app.py."""
    with gunicorn_server("tests.apps.core_app:create_app()", workers=1) as server:
        yield server


@pytest.fixture(scope="session")
def redis() -> Iterator[Server]:
    with redis_server() as server:
        yield server
