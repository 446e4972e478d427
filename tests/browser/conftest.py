"""Headless Debian Chromium driven by Playwright, and a live gateway for it to load."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import run_gateway

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def web_gateway(triton, tmp_path_factory) -> Iterator[str]:
    with run_gateway(triton.grpc_url, tmp_path_factory.mktemp("gateway-web")) as url:
        yield url


# Module scope: sync Playwright runs an event loop in the main thread while open, which would break
# asyncio-based tests collected after the browser tests.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
