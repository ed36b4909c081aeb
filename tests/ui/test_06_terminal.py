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
    page.check("terminal")

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
    page.open("/terminal", "terminal")
    page.wait(lambda: page.js(f"return document.querySelector('a[href*=\"{sid}\"]')"), "the session in the list")
    page.click(page.js(f"return document.querySelector('a[href*=\"{sid}\"]')"))
    page.wait_ready("terminal")
    page.wait(lambda: "hi-42" in rows_text(page), "the scrollback after reattaching")

    # The shell exits: the page says how.
    box = terminal_input(page)
    page.click(page.js("return document.querySelector('.xterm')"))
    box.send_keys("exit 3")
    box.send_keys(Keys.ENTER)
    status = page.wait(lambda: page.js(
        "const s = document.querySelector('[data-test=term-exit], [data-test=term-status]');"
        "return s && /exit|ended/i.test(s.textContent) ? s.textContent : null"), "the exit status shown")
    assert "3" in status, status
