"""The data page: create, edit and delete a key; invalid JSON refused at the field; a change
by another client appears without a reload; a compare-and-set conflict shown plainly."""

import json
import re
import urllib.parse


def row_value(page, key):
    """The value column of `key`'s row in the keys table, or None when it has no row."""
    return page.js(
        "for (const tr of document.querySelectorAll('tbody tr')) {"
        "  if (tr.dataset.key === arguments[0] || (tr.cells[0] && tr.cells[0].textContent.trim() === arguments[0]))"
        "    return tr.cells[1] ? tr.cells[1].textContent : '';"
        "} return null",
        key,
    )


def api_value(page, key):
    status, body = page.daemon.request("GET", "/api/v1/data/" + urllib.parse.quote(key, safe=""), raw=True)
    if status == 404:
        return None
    assert status == 200, (status, body)
    return json.loads(body)


def test_create_edit_delete_a_key(page):
    page.ensure_logged_in()
    page.open("/data", "data")
    page.check("data")
    key = "ui-test/created"
    page.click(page.button("new key"))
    page.type_into("key", key, exact=True)
    page.set_value("value (json)", '{"n": 1, "s": "one"}')
    page.click(page.button("save", exact=True))
    page.wait(lambda: api_value(page, key) is not None, "the key is stored")
    assert api_value(page, key)["value"] == {"n": 1, "s": "one"}
    page.wait(lambda: row_value(page, key) is not None, "the new key's row")
    page.check("data-editing")

    # Invalid JSON is caught at the field and nothing is sent.
    before = api_value(page, key)["version"]
    page.set_value("value (json)", '{"n": 2,')
    page.click(page.button("save", exact=True))
    msg = page.wait(lambda: page.js("return document.getElementById('data-value-error')?.textContent || ''") or
                    page.alert_text(), "a JSON error at the field")
    assert re.search(r"json", msg, re.I), msg
    assert page.js("return document.activeElement === arguments[0]", page.field("value (json)")) or \
        page.field("value (json)").get_attribute("aria-invalid") == "true"
    assert api_value(page, key)["version"] == before

    # Edit.
    page.set_value("value (json)", '{"n": 2, "s": "two"}')
    page.click(page.button("save", exact=True))
    page.wait(lambda: api_value(page, key)["value"] == {"n": 2, "s": "two"}, "the edited value stored")
    page.wait(lambda: '"two"' in (row_value(page, key) or ""), "the row shows the new value")

    # Delete, with a confirmation.
    page.click(page.button("delete key"))
    page.confirm_dialog(accept=True)
    page.wait(lambda: api_value(page, key) is None, "the key deleted")
    page.wait(lambda: row_value(page, key) is None, "the row gone")


def test_another_clients_change_appears_without_reload(page):
    page.ensure_logged_in()
    page.daemon.request("PUT", "/api/v1/data/live%2Fa", {"v": 1})
    page.open("/data?prefix=live/", "data")
    page.wait(lambda: row_value(page, "live/a") is not None, "the key's row")
    page.wait(lambda: page.find("text", "live", exact=True, within="[data-test=live-status]") is not None
              or "live" in (page.js("return document.querySelector('[aria-live]') && document.body.innerText") or ""),
              "the watch stream is connected")
    marker = page.js("window.__noReload = 'still-here'; return window.__noReload")
    # Another client: a new key, a changed key, a deleted key.
    page.daemon.request("PUT", "/api/v1/data/live%2Fb", {"from": "another client"})
    page.wait(lambda: "another client" in (row_value(page, "live/b") or ""), "the new key appears")
    page.daemon.request("PUT", "/api/v1/data/live%2Fa", {"v": 2})
    page.wait(lambda: '"v":2' in (row_value(page, "live/a") or "").replace(" ", ""), "the changed value appears")
    page.daemon.request("DELETE", "/api/v1/data/live%2Fb")
    page.wait(lambda: row_value(page, "live/b") is None, "the deleted key disappears")
    assert page.js("return window.__noReload") == marker, "the page was reloaded"

    # The open key changes under the editor: shown there too, without a reload.
    page.click(page.find("button", "live/a", exact=True))
    page.wait(lambda: '"v": 2' in page.field("value (json)").get_attribute("value"), "the editor shows the value")
    page.daemon.request("PUT", "/api/v1/data/live%2Fa", {"v": 3})
    page.wait(lambda: '"v": 3' in page.field("value (json)").get_attribute("value"), "the editor follows the change")
    assert page.js("return window.__noReload") == marker, "the page was reloaded"


def test_a_compare_and_set_conflict_is_shown(page):
    page.ensure_logged_in()
    page.daemon.request("PUT", "/api/v1/data/cas%2Fk", {"mine": False})
    page.open("/data?prefix=cas/&key=cas%2Fk", "data")
    page.wait(lambda: "mine" in page.field("value (json)").get_attribute("value"), "the editor shows the key")
    page.set_value("value (json)", '{"mine": true}')  # edited, not saved yet
    page.daemon.request("PUT", "/api/v1/data/cas%2Fk", {"theirs": True})
    page.allow(r"/api/v1/data/cas%2Fk - Failed to load resource: the server responded with a status of 412")
    page.click(page.button("save", exact=True))
    msg = page.wait(lambda: page.js(
        "const c = document.querySelector('[role=alert].conflict, [data-test=conflict]');"
        "return c && c.textContent.trim()"), "the conflict shown")
    assert re.search(r"conflict|changed", msg, re.I) and "theirs" in msg, msg
    assert api_value(page, "cas/k")["value"] == {"theirs": True}, "the other client's value was overwritten"
    page.check("data-conflict")
