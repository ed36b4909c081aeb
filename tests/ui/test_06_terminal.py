"""The terminal page: a new terminal in xterm.js; typing `echo hi-$((6*7))` and reading
`hi-42` from the rendered rows (xterm's DOM, not the WebSocket); the session listed to
reattach to; the exit status once the shell exits."""

import re
import urllib.parse

from selenium.webdriver.common.keys import Keys


def rows_text(page):
    """The terminal's rendered rows, as a person sees them."""
    return page.js(
        "const r = document.querySelector('.xterm-rows');"
        "return r ? [...r.children].map(c => c.textContent).join('\\n') : ''"
    )


def terminal_input(page):
    return page.wait(lambda: page.js("return document.querySelector('.xterm-helper-textarea')"),
                     "xterm's input")


def test_type_a_command_and_read_its_output_from_the_rows(page):
    page.ensure_logged_in()
    page.open("/terminal", "terminal")
    page.check("terminal-list")
    page.click(page.button("new terminal"))
    page.wait(lambda: "id=" in page.url(), "the session's page")
    page.wait_ready("terminal")
    sid = urllib.parse.parse_qs(urllib.parse.urlparse(page.url()).query)["id"][0]
    info = page.daemon.request("GET", f"/api/v1/terminals/{sid}")
    assert info["state"] == "running", info
    page.wait(lambda: rows_text(page).strip() != "", "the shell's prompt in the rows")

    box = terminal_input(page)
    page.click(page.js("return document.querySelector('.xterm')"))
    box.send_keys("echo hi-$((6*7))")
    box.send_keys(Keys.ENTER)
    page.wait(lambda: re.search(r"^hi-42\s*$", rows_text(page), re.M), "hi-42 in the rendered rows")
    assert "echo hi-$((6*7))" in rows_text(page), "the typed line is not echoed in the rows"
    page.check("terminal-session")

    # The size follows the window: a narrower window, fewer columns for the session.
    cols = page.daemon.request("GET", f"/api/v1/terminals/{sid}").get("cols")
    page.d.set_window_size(800, 900)
    try:
        if cols is not None:
            page.wait(lambda: page.daemon.request("GET", f"/api/v1/terminals/{sid}").get("cols") < cols,
                      "the session resized with the window")
    finally:
        page.d.set_window_size(1280, 900)

    # Listed, and reattached from the list: the scrollback comes back.
    page.click(page.link("terminal", within="nav"))
    page.wait(lambda: "id=" not in page.url(), "the list of sessions")
    page.wait_ready("terminal")
    page.wait(lambda: page.js(f"return document.querySelector('a[href*=\"{sid}\"]')"), "the session in the list")
    page.click(page.js(f"return document.querySelector('a[href*=\"{sid}\"]')"))
    page.wait_ready("terminal")
    page.wait(lambda: "hi-42" in rows_text(page), "the scrollback after reattaching")

    # The shell exits: the page says how.
    box = terminal_input(page)
    page.click(page.js("return document.querySelector('.xterm')"))
    box.send_keys("exit 3")
    box.send_keys(Keys.ENTER)
    status_js = "const s = document.querySelector('[data-test=term-status]'); return s ? s.textContent : ''"
    try:
        status = page.wait(lambda: re.search(r"exit|ended", page.js(status_js), re.I) and page.js(status_js),
                           "the exit status shown")
    except AssertionError as e:
        info = page.daemon.request("GET", f"/api/v1/terminals/{sid}")
        raise AssertionError(f"{e}; status {page.js(status_js)!r}; session {info}; rows:\n{rows_text(page)}") from None
    assert "3" in status, status


def new_session_page(page):
    page.open("/terminal", "terminal")
    page.click(page.button("new terminal"))
    page.wait(lambda: "id=" in page.url(), "the session's page")
    page.wait_ready("terminal")
    return urllib.parse.parse_qs(urllib.parse.urlparse(page.url()).query)["id"][0]


def test_leaving_by_a_full_navigation_frees_the_keyboard(page):
    """A person who leaves the terminal page by typing another address, a bookmark or a link
    that loads a page (not the app's own nav) and comes back must get the keyboard back:
    Chromium keeps a page it left in its back/forward cache with its WebSocket open, so the
    page must close its connection on `pagehide` (and reconnect on `pageshow`)."""
    page.ensure_logged_in()
    sid = new_session_page(page)
    page.wait(lambda: page.daemon.request("GET", f"/api/v1/terminals/{sid}")["attached"] == 1, "attached")
    page.open("/files", "files")  # a full page load, as a bookmark or typed address does
    page.wait(lambda: page.daemon.request("GET", f"/api/v1/terminals/{sid}")["attached"] == 0,
              "the left page's WebSocket closed (the session still counts it as attached)", timeout=10)
    page.open(f"/terminal?id={sid}", "terminal")
    box = terminal_input(page)
    page.click(page.js("return document.querySelector('.xterm')"))
    box.send_keys("echo back-$((40+2))")
    box.send_keys(Keys.ENTER)
    page.wait(lambda: re.search(r"^back-42\s*$", rows_text(page), re.M),
              "typing works after coming back (status: %s)" % page.js(
                  "return document.querySelector('[data-test=term-status]')?.textContent"), timeout=10)
    page.daemon.request("DELETE", f"/api/v1/terminals/{sid}")
