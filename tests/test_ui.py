"""The memory browser (``/ui/``) in a real browser: Chromium driven by Playwright, against the
server over real HTTP on loopback and a real sqlite store (see ``ui_support.py``).

Each test does what a user does (log in, search, open, edit, delete, follow a link) and checks
what the page shows and what the store holds afterwards.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from test_automem_server import free_port, serve_command, wait_for  # noqa: F401 - fixture
from ui_support import (  # noqa: F401 - fixtures
    TOKEN,
    Site,
    browser_fixture,
    log_in,
    page_fixture,
    site_fixture,
)

pytestmark = pytest.mark.slow


def hit_texts(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(".hit .content").all_inner_texts()]


def test_a_wrong_token_is_refused_and_the_right_one_opens_a_session(page: Any, site: Site) -> None:
    """Every page sends a stranger to the login form; a wrong token is refused with the form
    again and no cookie; the right one opens the page asked for, with a session cookie that
    scripts cannot read and other sites cannot send. The token is never in a URL."""
    page.goto(site.url + "/ui/search?user_id=alice")
    assert urlsplit(page.url).path == "/ui/login"
    page.get_by_label("Token").fill("not-the-token")
    with page.expect_response(re.compile(r"/ui/login$")) as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 401
    assert "not the server's" in page.get_by_role("alert").inner_text()
    assert page.context.cookies() == []
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert page.url == site.url + "/ui/search?user_id=alice"
    assert TOKEN not in page.url
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""
    page.get_by_role("button", name="Log out").click()
    page.goto(site.url + "/ui/")
    assert urlsplit(page.url).path == "/ui/login"


def test_guessing_the_token_is_slowed_down(site: Site) -> None:
    """After MAX_FAILURES wrong tokens from one address, its logins are refused with 429,
    even with the right token, so the token cannot be guessed at full speed."""
    from memory_drivers.ui.auth import MAX_FAILURES

    with httpx.Client(base_url=site.url, timeout=10) as client:
        for _ in range(MAX_FAILURES):
            assert client.post("/ui/login", data={"token": "guess"}).status_code == 401
        refused = client.post("/ui/login", data={"token": TOKEN})
        assert refused.status_code == 429 and "Too many wrong tokens" in refused.text
        assert "set-cookie" not in refused.headers


def test_users_list_counts_and_finds(page: Any, site: Site) -> None:
    log_in(page, site)
    rows = page.locator("tbody tr").all_inner_texts()
    assert [r.split("\t")[:2] for r in rows] == [["bob", "1"], ["alice", "3"]]
    page.get_by_label("Find a user").fill("ali")
    page.get_by_role("button", name="Find").click()
    assert page.locator("tbody tr").count() == 1
    page.get_by_role("link", name="alice", exact=True).click()
    assert parse_qs(urlsplit(page.url).query) == {"user_id": ["alice"]}
    assert len(hit_texts(page)) == 3


def test_search_with_filters_lives_in_the_url(page: Any, site: Site) -> None:
    """The filters narrow the hits as recall does, each hit says why it matched, and the
    search is its URL: opening the URL again gives the same page."""
    log_in(page, site, "/ui/search")
    page.get_by_label("User").fill("alice")
    page.get_by_label("Query").fill("green tea drinks")
    page.get_by_text("Filters").click()
    page.get_by_label("Tags (comma-separated)").fill("food, travel")
    page.get_by_label("Minimum importance").fill("0.5")
    page.get_by_role("button", name="Search", exact=True).click()
    assert hit_texts(page) == [
        "Alice drinks green tea every morning",
        "Alice is planning a trip to Lisbon in May",
    ]
    why = page.locator(".hit .why").first.inner_text()
    assert "hybrid search" in why and "vector score" in why and "fused score" in why
    assert page.locator(".hit").first.locator(".term").all_inner_texts() == [
        "green",
        "tea",
        "drink",
    ]
    query = parse_qs(urlsplit(page.url).query)
    assert query["tags"] == ["food, travel"] and query["min_importance"] == ["0.5"]
    shared = page.url

    page.get_by_label("fact").check()
    page.get_by_label("Minimum importance").fill("")
    page.get_by_label("Metadata (JSON, each key must equal)").fill('{"source": "email"}')
    page.get_by_role("button", name="Search", exact=True).click()
    assert hit_texts(page) == ["Alice stopped drinking coffee last year"]

    page.goto(shared)
    assert hit_texts(page) == [
        "Alice drinks green tea every morning",
        "Alice is planning a trip to Lisbon in May",
    ]
    assert page.get_by_label("Tags (comma-separated)").input_value() == "food, travel"


def test_a_bad_filter_shows_the_apis_error(page: Any, site: Site) -> None:
    log_in(page, site, "/ui/search?user_id=alice&q=tea&since=yesterday-ish")
    alert = page.get_by_role("alert").inner_text()
    assert "since" in alert and "ISO 8601" in alert
    assert page.locator(".hit").count() == 0


def test_edit_changes_recall_then_delete_forgets(page: Any, site: Site) -> None:
    """Open a memory from a search, change its content (embedded again), tags and importance:
    the same search now finds the new words and not the old; then delete it, confirmed."""
    log_in(page, site, "/ui/search?user_id=alice&q=coffee&search=keyword")
    assert hit_texts(page) == ["Alice stopped drinking coffee last year"]
    page.get_by_role("link", name="Alice stopped drinking coffee last year").click()
    memory = site.memories["coffee"]
    assert urlsplit(page.url).path == f"/ui/memories/{memory.id}"
    page.get_by_label("Content (a change is embedded again)").fill("Alice switched to rooibos")
    page.get_by_label("Tags (one per line)").fill("food\ndrinks")
    page.get_by_label("Importance (0 to 1)").fill("0.95")
    page.get_by_role("button", name="Save changes").click()
    assert page.get_by_role("status").inner_text() == "Saved."
    stored = site.driver.get(memory.id)
    assert stored is not None
    assert (stored.content, stored.tags, stored.importance) == (
        "Alice switched to rooibos",
        ["food", "drinks"],
        0.95,
    )
    assert stored.metadata == {"source": "email"} and stored.memory_type == "fact"

    page.goto(site.url + "/ui/search?user_id=alice&q=coffee&search=keyword")
    assert hit_texts(page) == []
    page.goto(site.url + "/ui/search?user_id=alice&q=rooibos&search=keyword")
    assert hit_texts(page) == ["Alice switched to rooibos"]

    page.get_by_role("link", name="Alice switched to rooibos").click()
    page.get_by_role("link", name="Delete this memory…").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Delete this memory?"
    page.get_by_role("button", name="Delete permanently").click()
    assert "was deleted" in page.get_by_role("status").inner_text()
    assert site.driver.get(memory.id) is None
    assert site.driver.related(site.memories["tea"].id)[0].memory.id != memory.id
    response = page.goto(site.url + f"/ui/memories/{memory.id}")
    assert response is not None and response.status == 404


def test_a_bad_edit_is_refused_and_changes_nothing(page: Any, site: Site) -> None:
    memory = site.memories["tea"]
    log_in(page, site, f"/ui/memories/{memory.id}")
    page.get_by_label("Content (a change is embedded again)").fill("changed")
    page.get_by_label("Metadata (a JSON object)").fill("[1, 2]")
    with page.expect_response(re.compile(r"/edit$")) as answer:
        page.get_by_role("button", name="Save changes").click()
    assert answer.value.status == 400
    assert "metadata must be a JSON object" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Content (a change is embedded again)").input_value() == "changed"
    assert site.driver.get(memory.id) == memory


def test_follow_an_association_both_ways(page: Any, site: Site) -> None:
    """The graph shows a memory's links both ways; clicking a node opens that memory."""
    tea, coffee, lisbon = (site.memories[n] for n in ("tea", "coffee", "lisbon"))
    log_in(page, site, f"/ui/memories/{tea.id}")
    related = page.locator("ul.related li").all_inner_texts()
    assert related[0].startswith("this memory PREFERS_OVER →") and "coffee" in related[0]
    assert related[1].startswith("← RELATES_TO from") and "Lisbon" in related[1]
    page.locator(f'svg.graph a[href="/ui/memories/{coffee.id}"]').click()
    assert urlsplit(page.url).path == f"/ui/memories/{coffee.id}"
    assert page.locator("ul.related li").all_inner_texts()[0].startswith("← PREFERS_OVER from")
    page.locator("ul.related a").first.click()
    assert urlsplit(page.url).path == f"/ui/memories/{tea.id}"
    page.get_by_role("link", name=re.compile("Lisbon")).first.click()
    assert urlsplit(page.url).path == f"/ui/memories/{lisbon.id}"


def test_content_is_shown_as_text_never_run(page: Any, site: Site) -> None:
    """A memory whose content is markup shows as that text; its script never runs."""
    evil = site.driver.store(
        "mallory", '<script>window.pwned = 1</script><img src=x onerror="window.pwned=2">'
    )
    site.driver.store_global_knowledge(
        "<script>window.pwned = 3</script>", "x<b>", doc_id="<i>d</i>"
    )
    log_in(page, site, "/ui/search?user_id=mallory")
    assert hit_texts(page) == [evil.content]
    page.get_by_role("link", name=evil.content).click()
    assert page.locator("#memory-content").inner_text() == evil.content
    assert page.get_by_label("Content (a change is embedded again)").input_value() == evil.content
    page.goto(site.url + "/ui/knowledge")
    assert page.get_by_role("heading", name="x<b>").is_visible()
    page.goto(site.url + "/ui/knowledge/%3Ci%3Ed%3C%2Fi%3E")
    assert page.locator("pre.chunk").inner_text() == "<script>window.pwned = 3</script>"
    assert page.evaluate("window.pwned") is None
    assert page.locator("script:not([src])").count() == 0


def test_a_form_without_the_sessions_csrf_token_is_refused(page: Any, site: Site) -> None:
    """A POST carrying the session cookie but not the session's CSRF token changes nothing."""
    memory = site.memories["tea"]
    log_in(page, site)
    answer = page.request.post(
        f"{site.url}/ui/memories/{memory.id}/delete", form={"csrf": "forged"}
    )
    assert answer.status == 403
    answer = page.request.post(f"{site.url}/ui/memories/{memory.id}/delete", form={})
    assert answer.status == 403
    assert site.driver.get(memory.id) == memory


def test_knowledge_store_search_replace_delete(page: Any, site: Site) -> None:
    log_in(page, site, "/ui/knowledge")
    assert page.get_by_role("heading", name="policies").is_visible()
    page.get_by_label("Document id (empty: a new one)").fill("FAC-1")
    page.get_by_label("Category", exact=True).fill("facilities")
    page.get_by_label("Title").fill("Lunch")
    page.get_by_label("Text", exact=True).fill("Lunch is served at noon in the canteen")
    page.get_by_role("button", name="Store").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Lunch"
    assert page.locator("pre.chunk").all_inner_texts() == ["Lunch is served at noon in the canteen"]
    page.get_by_label("New text (replaces every chunk)").fill("Lunch moves to 13:00")
    page.get_by_role("button", name="Replace").click()
    assert page.locator("pre.chunk").all_inner_texts() == ["Lunch moves to 13:00"]

    page.goto(site.url + "/ui/knowledge?q=lunch&search=keyword")
    assert page.locator(".hit .content").all_inner_texts() == ["Lunch moves to 13:00"]
    page.goto(site.url + "/ui/knowledge/FAC-1")
    page.get_by_role("link", name="Delete this document…").click()
    page.get_by_role("button", name="Delete permanently").click()
    assert "FAC-1 was deleted" in page.get_by_role("status").inner_text()
    assert site.driver.get_global_knowledge("FAC-1") is None
    assert [d.doc_id for d in site.driver.list_global_knowledge()] == ["POL-1"]


def test_health_shows_the_index_state_and_counts(page: Any, site: Site) -> None:
    log_in(page, site, "/ui/health")
    assert "Status: ok" in page.get_by_role("status").first.inner_text()
    assert "in sync with the store" in page.locator(".status").nth(1).inner_text()
    assert page.get_by_role("row", name=re.compile(r"^memories\s+4$")).count() >= 1


def test_every_field_has_a_label_and_phones_need_no_sideways_scroll(
    browser: Any, site: Site
) -> None:
    """On a phone-sized screen no page is wider than the screen, and every form field of
    every page has a label (what a screen reader reads)."""
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        log_in(page, site)
        tea = site.memories["tea"]
        for path in (
            "/ui/",
            "/ui/search?user_id=alice&q=tea&tags=food",
            f"/ui/memories/{tea.id}",
            "/ui/knowledge",
            "/ui/knowledge/POL-1",
            "/ui/health",
        ):
            page.goto(site.url + path)
            wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 0, f"{path} is {wide}px wider than the screen"
            unlabelled = page.evaluate(
                """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                   .filter(e => e.labels.length === 0).map(e => e.name)"""
            )
            assert unlabelled == [], f"{path}: fields without a label: {unlabelled}"
    finally:
        context.close()


def test_ui_command_serves_the_page_alone(serve_command: Any) -> None:  # noqa: F811
    """``memory-drivers ui`` serves the page (and /health) but not AutoMem's API; the token
    typed into the login form is never logged."""
    port = free_port()
    process = serve_command("-v", "ui", "--driver", "sqlite", "--port", str(port), "--token", TOKEN)
    url = f"http://127.0.0.1:{port}"
    wait_for(url, process)
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/").headers["location"] == "/ui/"
        assert client.get("/ui/").headers["location"] == "/ui/login?next=%2Fui%2F"
        assert client.post("/ui/login", data={"token": "wrong"}).status_code == 401
        login = client.post("/ui/login", data={"token": TOKEN, "next": "/ui/health"})
        assert login.status_code == 303 and login.headers["location"] == "/ui/health"
        health = client.get("/ui/health")
        assert health.status_code == 200 and "Status: <strong>ok</strong>" in health.text
        api = client.get("/recall", headers={"X-API-Key": TOKEN})
        assert api.status_code == 404
    process.terminate()
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert f"the memory browser at {url}/ui/" in err
    assert "POST /ui/login" in out + err and TOKEN not in out + err


def test_serve_ui_serves_the_api_and_the_page(serve_command: Any) -> None:  # noqa: F811
    """``memory-drivers serve --ui``: AutoMem's API keeps its token check (the page's session
    does not open it), and the page is at /ui/ behind its login form."""
    port = free_port()
    process = serve_command("serve", "--ui", "--port", str(port), "--token", TOKEN)
    url = f"http://127.0.0.1:{port}"
    wait_for(url, process)
    with httpx.Client(base_url=url, timeout=10) as client:
        made = client.post("/memory", json={"content": "via the API"}, headers={"X-API-Key": TOKEN})
        assert made.status_code == 201
        assert client.get("/").status_code == 401
        login = client.post("/ui/login", data={"token": TOKEN, "next": "/ui/"})
        assert login.status_code == 303
        assert "automem" in client.get("/ui/").text
        assert client.get("/recall").status_code == 401
    process.terminate()
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert f"AutoMem's API and the memory browser at {url}/ui/" in err
