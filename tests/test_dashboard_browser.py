"""The example app's live dashboard in Chromium: the three values show at once in en-US
form and update, and opening a second dashboard raises "Online" by one on the first."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests import browser
from tests.servers import Server, gunicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EN_US = re.compile(r"\d{1,3}(,\d{3})*\.\d{2}")  # 1,234.56


@pytest.fixture(scope="module")
def dashboard_server() -> Iterator[Server]:
    with gunicorn_server(env={**browser.SERVER_ENV, "FLASK_DASHBOARD_INTERVAL": "0.25"}) as s:
        yield s


def open_dashboard(chromium: Browser, server: Server) -> Page:
    page = chromium.new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.click("#dashboard-link")  # reached from the chat page
    page.wait_for_url("**/dashboard")
    page.wait_for_function(
        "() => ['online', 'rate', 'sales'].every("
        "id => document.getElementById(id).textContent !== '\\u2013')", timeout=15_000)
    assert not errors
    return page


def number(page: Page, element: str) -> float:
    return float((page.text_content(f"#{element}") or "").replace(",", ""))


def test_the_dashboard_shows_live_values_and_counts_visitors(
    chromium: Browser, dashboard_server: Server,
) -> None:
    first = open_dashboard(chromium, dashboard_server)
    labels = first.locator("dt").all_text_contents()
    assert labels == ["Online", "EUR/USD rate", "Sales total"]
    assert re.fullmatch(r"\d\.\d{4}", first.text_content("#rate") or "")
    assert EN_US.fullmatch(first.text_content("#sales") or "")
    total = first.text_content("#sales")
    first.wait_for_function(  # the values update live
        "t => document.getElementById('sales').textContent !== t", arg=total, timeout=10_000)
    assert EN_US.fullmatch(first.text_content("#sales") or "")
    assert number(first, "sales") > float((total or "0").replace(",", ""))
    online = int(number(first, "online"))
    assert online >= 1
    second = open_dashboard(chromium, dashboard_server)
    first.wait_for_function(
        "n => document.getElementById('online').textContent === String(n)", arg=online + 1,
        timeout=10_000)
    assert int(number(second, "online")) == online + 1
    second.context.close()
    first.wait_for_function(  # and down again when it closes
        "n => document.getElementById('online').textContent === String(n)", arg=online,
        timeout=10_000)
    assert first.locator("#status").get_attribute("data-state") == "live"
    first.context.close()
