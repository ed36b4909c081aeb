"""Public tunnels (issue 28) on the Tunnels page: with tunnels on and the fake cloudflared of
tests/it/tunnel_fakes/ configured (a daemon of its own), the four providers are listed, ssh
unavailable with the server's reason and its Start disabled; Start on cloudflared brings its row
to `up` with the trycloudflare.com URL as a link opening in a new tab, and Stop to `stopped`.
With tunnels off (the suite's daemon, as by default) the page shows the server's message on
how to turn them on instead of the table."""

import json
import re
import shutil

import pytest

from conftest import REPO, Daemon

FAKE_CLOUDFLARED = REPO / "tests" / "it" / "tunnel_fakes" / "cloudflared"
FAKE_NGROK = REPO / "tests" / "it" / "tunnel_fakes" / "ngrok"
PROVIDERS = ["ssh", "localtunnel", "cloudflared", "ngrok"]


@pytest.fixture(scope="module")
def tunnel_daemon(daemon):
    d = Daemon(
        daemon.binary,
        extra_config=(
            "[tunnels]\nenabled = true\n"
            f'[tunnels.cloudflared]\npath = "{FAKE_CLOUDFLARED}"\n'
            # ngrok's fake, but no authtoken file: unavailable, saying so.
            f'[tunnels.ngrok]\npath = "{FAKE_NGROK}"\n'
        ),
    )
    yield d
    d.stop()
    shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture
def on_tunnel_daemon(page, tunnel_daemon, daemon):
    """The shared browser logged in to the daemon with tunnels on; back to the suite's daemon
    afterwards (the next test's ensure_logged_in logs in there again: the session cookie is
    per host, not per port)."""
    page.daemon = tunnel_daemon
    try:
        page.login_with_token(tunnel_daemon.token)
        page.wait(lambda: page.ready_state() not in (None, "login"), "a page after the login")
        yield page
    finally:
        page.daemon = daemon


def cell(page, provider, name):
    return page.js(
        "const td = document.querySelector(`tr[data-provider=\"${arguments[0]}\"] td[data-test=\"${arguments[1]}\"]`);"
        "return td ? td.textContent.replace(/\\s+/g, ' ').trim() : null",
        provider,
        name,
    )


def row_button(page, provider, label):
    return page.js(
        "return document.querySelector(`tr[data-provider=\"${arguments[0]}\"] button[aria-label=\"${arguments[1]}\"]`)",
        provider,
        label,
    )


def url_link(page, provider):
    return page.js(
        "const a = document.querySelector(`tr[data-provider=\"${arguments[0]}\"] td[data-test=url] a`);"
        "return a ? {href: a.getAttribute('href'), text: a.textContent, target: a.target, rel: a.rel} : null",
        provider,
    )


def test_tunnels_listed_started_and_stopped(on_tunnel_daemon, tunnel_daemon):
    page = on_tunnel_daemon
    page.open("/tunnels", "tunnels")
    assert page.js("return document.title") == "Tunnels · localhostd"
    assert page.js("return [...document.querySelectorAll('tr[data-provider]')].map(tr => tr.dataset.provider)") == PROVIDERS

    api = {t["provider"]: t for t in tunnel_daemon.request("GET", "/api/v1/tunnels")["items"]}
    # ssh: no host configured, so unavailable, the server's reason shown and Start disabled with
    # the reason as its title.
    ssh = api["ssh"]
    assert not ssh["available"] and ssh["unavailable_reason"], ssh
    shown = cell(page, "ssh", "available")
    assert "unavailable" in shown and ssh["unavailable_reason"] in shown, shown
    start_ssh = row_button(page, "ssh", "Start ssh")
    assert page.js("return arguments[0].disabled", start_ssh)
    assert ssh["unavailable_reason"] in start_ssh.get_attribute("title")
    assert page.js("return document.getElementById('tunnel-ssh-remote_port').disabled")

    ngrok = api["ngrok"]
    assert not ngrok["available"] and "authtoken" in ngrok["unavailable_reason"], ngrok
    assert ngrok["unavailable_reason"] in cell(page, "ngrok", "available")
    assert api["cloudflared"]["available"], api["cloudflared"]
    assert cell(page, "cloudflared", "state") == "stopped"
    assert url_link(page, "cloudflared") is None
    assert page.js("return arguments[0].disabled", row_button(page, "cloudflared", "Stop cloudflared"))
    page.check("tunnels-stopped")

    # A named tunnel needs a token file this daemon lacks: the server's refusal is shown.
    page.allow(r"/api/v1/tunnels/cloudflared/start - Failed to load resource: the server responded with a status of 4")
    named = page.field("Named tunnel")
    page.click(named)
    page.click(page.button("Start cloudflared"))
    refusal = page.alert_text()
    status, body = tunnel_daemon.request("POST", "/api/v1/tunnels/cloudflared/start", {"named": True}, raw=True)
    assert status >= 400 and json.loads(body)["error"]["message"] in refusal, (refusal, status, body)
    assert cell(page, "cloudflared", "state") == "stopped"
    page.click(named)
    assert not named.is_selected()

    page.click(page.button("Start cloudflared"))
    # The page follows the tunnel by itself (no reload) until the client says its URL.
    page.wait(lambda: cell(page, "cloudflared", "state") == "up", "cloudflared's row to turn up", timeout=60)
    link = page.wait(lambda: url_link(page, "cloudflared"), "the public URL as a link")
    assert re.fullmatch(r"https://[a-z0-9-]+\.trycloudflare\.com/?", link["href"]), link
    assert link["text"] == link["href"] and link["target"] == "_blank", link
    assert "noopener" in link["rel"].split(), link
    view = {t["provider"]: t for t in tunnel_daemon.request("GET", "/api/v1/tunnels")["items"]}["cloudflared"]
    assert view["state"] == "up" and view["url"] == link["href"], view
    assert view["desired"] == "up"
    # The client's last lines (when the server keeps some), behind a summary.
    summary = page.js("return document.querySelector('tr[data-provider=cloudflared] details.tunnel-lines > summary')")
    if view["last_lines"]:
        assert summary is not None, "the client's last lines are not offered"
        page.click(summary)
        lines = page.js("return document.querySelector('tr[data-provider=cloudflared] details.tunnel-lines pre').textContent")
        assert view["last_lines"][-1] in lines, (lines, view["last_lines"])
    else:
        assert summary is None, "client output offered although the server kept none"
    page.js("window.scrollTo(0, 0); for (const t of document.querySelectorAll('#toasts .toast')) t.remove()")
    page.check("tunnels")

    page.click(page.button("Stop cloudflared"))
    page.wait(lambda: cell(page, "cloudflared", "state") == "stopped", "cloudflared's row to turn stopped")
    assert url_link(page, "cloudflared") is None
    view = {t["provider"]: t for t in tunnel_daemon.request("GET", "/api/v1/tunnels")["items"]}["cloudflared"]
    assert view["state"] == "stopped" and view["desired"] == "down", view


def test_tunnels_off_shows_how_to_turn_them_on(page, daemon):
    page.ensure_logged_in()
    status, body = daemon.request("GET", "/api/v1/tunnels", raw=True)
    assert status == 403, (status, body)
    message = json.loads(body)["error"]["message"]
    assert "[tunnels] enabled = true" in message, message
    page.open("/tunnels", "tunnels")
    shown = page.wait(
        lambda: page.js("const e = document.querySelector('[data-test=tunnels-off]'); return e && e.textContent.trim()"),
        "the message that tunnels are off",
    )
    assert shown == message
    assert page.has_text("Tunnels are off.")
    assert page.js("return document.querySelector('tr[data-provider]')") is None, "a table although tunnels are off"
    assert page.js("return document.querySelector('nav a[href=\"/tunnels\"]').offsetParent !== null"), \
        "the Tunnels page is not in the nav for an admin"
    page.check("tunnels-off")


def test_a_read_token_is_not_offered_the_tunnels(page, tunnel_daemon, daemon):
    """On the daemon with tunnels on, a read token sees no Tunnels link, and the page (opened
    by its address) shows the server's refusal instead of the table."""
    page.daemon = tunnel_daemon
    try:
        made = tunnel_daemon.request("POST", "/api/v1/tokens", {"name": "ui-tunnel-reader", "scopes": ["read"]})
        page.login_with_token(made["token"])
        page.wait(lambda: page.ready_state() not in (None, "login"), "a page after the login")
        assert page.logged_in_actor()["scopes"] == ["read"]
        assert page.js("return document.querySelector('nav a[href=\"/tunnels\"]').offsetParent === null"), \
            "the Tunnels page is offered to a read token"
        status, body = tunnel_daemon.request("GET", "/api/v1/tunnels", token=made["token"], raw=True)
        assert status == 403, (status, body)
        page.open("/tunnels", "tunnels")
        shown = page.wait(
            lambda: page.js("const e = document.querySelector('[data-test=tunnels-off]'); return e && e.textContent.trim()"),
            "the refusal",
        )
        assert shown == json.loads(body)["error"]["message"]
        assert page.js("return document.querySelector('tr[data-provider]')") is None
        assert page.has_text("need a token with the admin scope")
        page.check("tunnels-read-token")
        page.fetch("DELETE", "/api/v1/session")
    finally:
        page.daemon = daemon
