from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import Server, gunicorn_server, redis_server

os.environ.setdefault("FLASK_TICKER_INTERVAL", "0")  # keep the example app's ticker quiet


@pytest.fixture(scope="module")
def core_server() -> Iterator[Server]:
    """One gunicorn gevent worker running tests/apps/core_app.py."""
    with gunicorn_server("tests.apps.core_app:create_app()", workers=1) as server:
        yield server


@pytest.fixture(scope="session")
def redis() -> Iterator[Server]:
    with redis_server() as server:
        yield server
