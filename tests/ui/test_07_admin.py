"""The admin page: create a token (its secret shown once, and it works), revoke it (and it
stops working)."""

import re


def token_works(page, secret):
    status, _ = page.daemon.request("GET", "/api/v1/session", token=secret, raw=True)
    return status == 200


def test_create_and_revoke_a_token(page):
    page.ensure_logged_in()
    page.open("/admin", "admin")
    page.check("admin")
    page.type_into("name", "ui-test-token", exact=True)
    write = page.field("write: change data", exact=False)
    if not write.is_selected():
        page.click(write)
    page.click(page.button("create token"))
    secret_el = page.field("secret of ui-test-token")
    secret = page.wait(lambda: secret_el.get_attribute("value"), "the new token's secret")
    assert re.fullmatch(r"lhd_\S+", secret), secret
    assert token_works(page, secret), "the token shown does not work"
    listed = [t for t in page.daemon.request("GET", "/api/v1/tokens")["items"] if t["name"] == "ui-test-token"]
    assert len(listed) == 1 and set(listed[0]["scopes"]) >= {"read", "write"}, listed
    page.screenshot("admin-token-created")
    # Shown once: after a reload the secret is nowhere on the page.
    page.open("/admin", "admin")
    page.text("ui-test-token")
    assert secret not in page.js("return document.documentElement.outerHTML")

    page.click(page.button("revoke ui-test-token"))
    page.confirm_dialog(accept=True)
    page.wait(lambda: not token_works(page, secret), "the token revoked")
    tok = [t for t in page.daemon.request("GET", "/api/v1/tokens")["items"] if t["name"] == "ui-test-token"]
    assert not tok or tok[0]["revoked_at"], tok
    page.check("admin-token-revoked")
