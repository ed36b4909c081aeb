"""A token with the read scope only: the pages show, a change is refused with a readable
message (nothing fails silently), and the admin page is not offered."""

import re


def test_a_read_token_sees_refusals_as_messages(page):
    page.ensure_logged_in()
    made = page.daemon.request("POST", "/api/v1/tokens", {"name": "ui-reader", "scopes": ["read"]})
    page.fetch("DELETE", "/api/v1/session")
    page.login_with_token(made["token"])
    page.wait(lambda: page.ready_state() not in (None, "login"), "a page after the login")
    assert page.logged_in_actor()["scopes"] == ["read"]
    assert page.js("const a = document.querySelector('nav a[href=\"/admin\"]');"
                   "return !a || a.offsetParent === null"), "the admin page is offered to a read token"

    page.open("/data", "data")
    page.allow(r"/api/v1/data/[^ ]* - Failed to load resource: the server responded with a status of 403")
    page.click(page.button("new key"))
    page.type_into("key", "reader/try", exact=True)
    page.set_value("value (json)", '{"x": 1}')
    page.click(page.button("save", exact=True))
    msg = page.alert_text()
    assert re.search(r"scope|permission|forbidden|not allowed|write", msg, re.I), msg
    status, _ = page.daemon.request("GET", "/api/v1/data/reader%2Ftry", raw=True)
    assert status == 404
    page.check("data-read-only-refused")
    page.ensure_logged_in()
