"""Screenshots of the memory browser's main pages for docs/ui.md.

    python tests/ui_screenshots.py docs/img

Serves the page over a throwaway sqlite store seeded by ``ui_support.seed`` and saves
``ui-users.png``, ``ui-search.png``, ``ui-memory.png``, ``ui-knowledge.png``, ``ui-health.png``
and ``ui-phone.png`` into the directory given.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright
from ui_support import CHROMIUM, TOKEN, seed

from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.server import ServerThread, create_app
from memory_drivers.testing.embedders import fast_embedder


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = build_settings(_env_file=None).replace(
            memory_db_url=f"sqlite:///{tmp}/memories.db"
        )
        with SQLiteDriver(settings, embedder=fast_embedder()) as driver:
            made = seed(driver)
            for i, text in enumerate(("Carol's cat is called Miso", "Carol works nights")):
                driver.store("carol", text, tags=["family" if i == 0 else "work"])
            with (
                ServerThread(create_app(driver, api_token=TOKEN, ui=True)) as server,
                sync_playwright() as p,
            ):
                browser = p.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_page(viewport={"width": 1200, "height": 820})
                page.goto(server.url + "/ui/")
                page.get_by_label("Token").fill(TOKEN)
                page.get_by_role("button", name="Log in").click()
                page.wait_for_load_state()
                shots = {
                    "ui-users.png": "/ui/",
                    "ui-search.png": "/ui/search?user_id=alice&q=what+does+alice+drink"
                    "&tags=food,travel&min_importance=0.3",
                    "ui-memory.png": f"/ui/memories/{made['tea'].id}",
                    "ui-knowledge.png": "/ui/knowledge?q=remote+work",
                    "ui-health.png": "/ui/health",
                }
                for name, path in shots.items():
                    page.goto(server.url + path)
                    page.screenshot(path=str(out / name), full_page=True)
                phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
                phone.context.add_cookies(page.context.cookies())
                phone.goto(server.url + shots["ui-search.png"])
                phone.screenshot(path=str(out / "ui-phone.png"))
                browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
