from __future__ import annotations

import faulthandler
import os
import signal
from collections.abc import Iterator

import pytest

from tests.servers import Server, gunicorn_server, redis_server

# The browser fixtures (one Playwright and one Chromium for the whole session: two sync
# Playwright instances cannot be alive in one thread).
pytest_plugins = ["tests.browser"]

os.environ.setdefault("FLASK_TICKER_INTERVAL", "0")  # keep the example app's ticker quiet

# Fixtures that start a server process: a test using one belongs to the slow tier.
SERVER_FIXTURES = frozenset({"core_server", "redis"})


_STACKS_DIR = os.environ.get("FSS_TEST_STACKS")
_stack_file = (open(os.path.join(_STACKS_DIR, f"stacks-{os.getpid()}.txt"), "w")  # noqa: SIM115
               if _STACKS_DIR else None)


def _dump_stacks_on_sigterm() -> None:
    """A test process stopped by scripts/test's time limit (SIGTERM) writes every thread's
    stack to a file the script prints (not to stderr: pytest captures it), so a hang says
    where it is."""
    if _stack_file is not None:
        faulthandler.register(signal.SIGTERM, file=_stack_file, all_threads=True, chain=True)


_dump_stacks_on_sigterm()


def pytest_runtest_setup(item: pytest.Item) -> None:
    _dump_stacks_on_sigterm()  # again: a test that restores its own SIGTERM handler replaces it


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
