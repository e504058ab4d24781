"""The memory browser's test fixtures: a served sqlite store and a real Chromium.

The browser is Debian's ``chromium`` driven by Playwright (no browser download): without it
(or without the ``playwright`` package) the browser tests skip on a laptop and fail in CI
(``MEMORY_DRIVERS_REQUIRE_SERVERS=1``, see ``conftest.require_server``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require_server

from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.models import Memory
from memory_drivers.server import ServerThread, create_app
from memory_drivers.testing.embedders import fast_embedder

TOKEN = "ui-test-token"
#: The system Chromium (override with MEMORY_DRIVERS_CHROMIUM).
CHROMIUM = (
    os.environ.get("MEMORY_DRIVERS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)


@dataclass
class Site:
    """A served store: its driver, the page's address and the memories seeded in it."""

    driver: SQLiteDriver
    url: str
    memories: dict[str, Memory]


def seed(driver: SQLiteDriver) -> dict[str, Memory]:
    """A small store: two users, tags, types, importance, metadata, a conversation, links and
    a knowledge document. Returns the memories by a short name."""
    made = {
        "tea": driver.store(
            "alice",
            "Alice drinks green tea every morning",
            conversation_id="chat-1",
            tags=["food", "habit"],
            metadata={"source": "chat"},
            memory_type="preference",
            importance=0.8,
        ),
        "lisbon": driver.store(
            "alice",
            "Alice is planning a trip to Lisbon in May",
            conversation_id="chat-1",
            tags=["travel"],
            memory_type="episodic",
            importance=0.6,
        ),
        "coffee": driver.store(
            "alice",
            "Alice stopped drinking coffee last year",
            tags=["food"],
            metadata={"source": "email"},
            memory_type="fact",
            importance=0.3,
        ),
        "bob": driver.store("bob", "Bob likes green tea too", tags=["food"]),
    }
    driver.associate(made["tea"].id, made["coffee"].id, "PREFERS_OVER", 0.9)
    driver.associate(made["lisbon"].id, made["tea"].id, "RELATES_TO", 0.4)
    driver.store_global_knowledge(
        "Employees may work remotely two days a week. Core hours are 10 to 16.",
        "policies",
        title="Remote work",
        doc_id="POL-1",
    )
    return made


@pytest.fixture(name="site")
def site_fixture(tmp_path: Path) -> Iterator[Site]:
    """The API and the page (token :data:`TOKEN`) over a seeded sqlite store."""
    settings = build_settings(_env_file=None).replace(
        memory_db_url=f"sqlite:///{tmp_path}/store/memories.db"
    )
    driver = SQLiteDriver(settings, embedder=fast_embedder())
    try:
        memories = seed(driver)
        with ServerThread(create_app(driver, api_token=TOKEN, ui=True)) as server:
            yield Site(driver, server.url, memories)
    finally:
        driver.close()


@pytest.fixture(name="browser", scope="session")
def browser_fixture() -> Iterator[Any]:
    """A headless Chromium for the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        require_server(f"the browser tests need Playwright ({exc}): pip install playwright")
    if not Path(CHROMIUM).exists():
        require_server(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(name="page")
def page_fixture(browser: Any, site: Site) -> Iterator[Any]:
    """A fresh browser context (no cookies) on a laptop-sized screen."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Any, site: Site, path: str = "/ui/") -> None:
    """Open ``path``, which sends the browser to the login form, and log in."""
    page.goto(site.url + path)
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
