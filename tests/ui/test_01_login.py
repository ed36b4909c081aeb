"""Logging in: with a token, with a one-time `localhostd login-url` link, a wrong token, the
`?next=` redirect, logging out."""

import re
import urllib.parse


def logout_via_api(page):
    if page.d.current_url.startswith(page.base):
        page.fetch("DELETE", "/api/v1/session")


def test_a_wrong_token_shows_an_error(page):
    page.open("/login", "login")
    logout_via_api(page)
    page.open("/login", "login")
    page.check("login")
    page.type_into("token", "lhd_not-a-real-token")
    page.click(page.button("log in"))
    msg = page.alert_text()
    assert re.search(r"token|unauthori|invalid|unknown|not valid", msg, re.I), msg
    assert urllib.parse.urlparse(page.url()).path == "/login"
    assert page.logged_in_actor() is None
    page.check("login-error")


def test_a_page_needs_a_login_and_next_brings_the_user_back(page):
    logout_via_api(page)
    page.open("/data?prefix=nothing/")
    page.wait_ready("login")
    u = urllib.parse.urlparse(page.url())
    assert u.path == "/login", page.url()
    assert urllib.parse.parse_qs(u.query).get("next") == ["/data?prefix=nothing/"], page.url()
    page.type_into("token", page.daemon.token)
    page.click(page.button("log in"))
    page.wait_ready("data")
    u = urllib.parse.urlparse(page.url())
    assert (u.path, urllib.parse.parse_qs(u.query).get("prefix")) == ("/data", ["nothing/"])


def test_next_is_only_followed_to_this_sites_pages(page):
    logout_via_api(page)
    page.open("/login?next=" + urllib.parse.quote("//example.invalid/x", safe=""), "login")
    page.type_into("token", page.daemon.token)
    page.click(page.button("log in"))
    page.wait(lambda: page.url().startswith(page.base + "/") and page.js(
        "return document.getElementById('main').getAttribute('data-ready')") not in (None, "login"),
        "a page of this site after the login")
    assert page.url().startswith(page.base + "/"), page.url()


def test_token_login_shows_the_actor_and_logout_ends_the_session(page):
    logout_via_api(page)
    page.login_with_token(page.daemon.token)
    page.wait_ready("dashboard")
    assert page.logged_in_actor()["name"] == "initial-admin"
    page.text("initial-admin", within="header")
    page.click(page.button("log out"))
    page.wait_ready("login")
    assert page.logged_in_actor() is None
    # The cookie is gone: a page sends the browser back to the login.
    page.open("/files")
    page.wait_ready("login")


def test_a_login_url_link_logs_in_once(page):
    logout_via_api(page)
    r = page.daemon.cli("login-url", "--base", page.base)
    assert r.returncode == 0, r.stderr
    link = r.stdout.strip()
    assert re.fullmatch(re.escape(page.base) + r"/login#link=[A-Za-z0-9_\-.~%]+", link), link
    page.d.get(link)
    page.wait_ready("dashboard")
    assert "#link=" not in page.url() and "link=" not in page.url(), page.url()
    assert page.logged_in_actor() is not None
    # The same link again: refused, and the page says so.
    logout_via_api(page)
    page.d.get(link)
    page.wait_ready("login")
    msg = page.alert_text()
    assert re.search(r"link|expired|used|invalid", msg, re.I), msg
    assert page.logged_in_actor() is None
    assert "#link=" not in page.url(), page.url()
    page.ensure_logged_in()
