"""Every page, logged in: no console error or CSP violation, no serious or critical axe
violation, a screenshot; in light and dark themes (prefers-color-scheme emulated), and at
360 px wide with no horizontal page scroll."""

import pytest

from conftest import PAGES

PHONE = 360


@pytest.mark.parametrize("path,name", sorted(PAGES.items(), key=lambda kv: kv[1]))
def test_each_page_light_dark_and_phone_width(page, path, name):
    page.ensure_logged_in()
    page.open(path, name)
    title = page.js("return document.title")
    assert title.endswith("· localhostd") and len(title) > len("· localhostd"), title
    current = page.js(
        "return [...document.querySelectorAll('nav a[aria-current=page]')].map(a => a.getAttribute('href'))"
    )
    assert current == [path], f"the nav marks {current} as current on {path}"
    page.check(f"{name}-light")

    page.color_scheme("dark")
    bg = page.js("return [document.documentElement, document.body].map(e => getComputedStyle(e).backgroundColor)")
    page.check(f"{name}-dark")
    page.color_scheme("light")
    assert page.js("return [document.documentElement, document.body].map(e => getComputedStyle(e).backgroundColor)") != bg, \
        "the dark theme has the light theme's background"

    page.width(PHONE)
    page.open(path, name)
    assert page.js("return document.documentElement.clientWidth") == PHONE
    over, wide = page.horizontal_overflow()
    page.screenshot(f"{name}-{PHONE}px")
    assert over <= 0, f"{path} scrolls sideways by {over}px at {PHONE}px wide; too wide: {wide}"
    page.check(f"{name}-{PHONE}px")
    page.color_scheme("dark")
    page.check(f"{name}-{PHONE}px-dark")
    page.color_scheme("light")
    page.width(None)


def test_the_login_page_at_phone_width_and_dark(page):
    page.width(PHONE)
    page.color_scheme("dark")
    page.fetch("DELETE", "/api/v1/session") if page.url().startswith(page.base) else None
    page.open("/login", "login")
    over, wide = page.horizontal_overflow()
    assert over <= 0, f"/login scrolls sideways by {over}px at {PHONE}px wide; too wide: {wide}"
    page.check("login-360px-dark")
    page.width(None)
    page.color_scheme("light")
    page.ensure_logged_in()


def test_keyboard_reaches_the_nav_with_a_visible_focus(page):
    page.ensure_logged_in()
    page.open("/", "dashboard")
    from selenium.webdriver.common.keys import Keys

    body = page.js("return document.body")
    seen = []
    for _ in range(12):
        body.send_keys(Keys.TAB) if not seen else page.d.switch_to.active_element.send_keys(Keys.TAB)
        el = page.d.switch_to.active_element
        info = page.js(
            "const el = arguments[0], cs = getComputedStyle(el);"
            "return [el.tagName, el.getAttribute('href'), cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0"
            " || cs.boxShadow !== 'none']",
            el,
        )
        seen.append(info)
        if info[1] == "/data":
            break
    assert any(tag == "A" and href == "/data" for tag, href, _ in seen), f"Tab never reached the Data link: {seen}"
    assert all(visible for _, _, visible in seen), f"an element took focus without a visible focus ring: {seen}"
