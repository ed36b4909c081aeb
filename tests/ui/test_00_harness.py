"""Controls for the checks every page gets: each must be able to fail. A console error, a
script the UI's CSP refuses, and an unlabelled control are each caught; and the UI's pages
carry the CSP at all."""

import urllib.request


def test_the_ui_pages_carry_the_csp(daemon):
    with urllib.request.urlopen(daemon.base + "/login", timeout=10) as r:
        csp = r.headers.get("Content-Security-Policy", "")
        assert r.headers.get("Cache-Control") == "no-cache"
    for part in ("script-src 'self'", "default-src 'none'", "frame-ancestors 'none'", "connect-src 'self'"):
        assert part in csp, f"{part!r} missing from the UI's CSP: {csp!r}"
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp, csp


def test_the_log_check_catches_console_errors_and_csp_violations(page):
    page.open("/login", "login")
    page.js("console.error('control: a console error')")
    # An inline script and an eval, as an injection would try: the CSP must refuse both,
    # and the refusals must reach the log check.
    page.js(
        "const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
        "document.body.appendChild(s);"
    )
    page.js("try { window.eval('1'); } catch (e) { console.warn('eval refused: ' + e); }")
    assert page.js("return window.__inline") is None, "an inline script ran: the CSP is not in force"
    problems = []

    def both_seen():
        problems.extend(page.log_problems())
        text = "\n".join(problems)
        return "control: a console error" in text and ("Content Security Policy" in text or "Refused to" in text)

    page.wait(both_seen, f"the control console error and CSP refusal in the log check's findings: {problems}", timeout=10)


def test_axe_catches_an_unlabelled_control(page):
    page.open("/login", "login")
    assert page.axe() == [], "the login page itself has violations (see the every-page test)"
    page.js(
        "const i = document.createElement('input'); i.type = 'text'; i.id = 'control-unlabelled';"
        "document.getElementById('main').appendChild(i);"
        "const b = document.createElement('button'); document.getElementById('main').appendChild(b);"
    )
    found = {v["id"] for v in page.axe()}
    assert {"label", "button-name"} <= found, found
    page.open("/login", "login")
