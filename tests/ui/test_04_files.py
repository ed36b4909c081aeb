"""The files page: a 50 MB upload through the file picker with its progress bar, downloaded
again with the same SHA-256; several files dropped at once; the quota refusals shown."""

import json
import os
import re
import tempfile
import urllib.parse

from conftest import FILES_QUOTA, sha256_file

MB = 1 << 20

# Records every value the page's <progress> elements take (the app sets .value, which
# reflects to the attribute) so the test sees the bar move without sampling on a timer.
WATCH_PROGRESS = """
window.__progress = [];
new MutationObserver((ms) => {
  for (const m of ms) if (m.target.tagName === 'PROGRESS')
    window.__progress.push([m.target.getAttribute('aria-label') || '', Number(m.target.value), Number(m.target.max)]);
}).observe(document.getElementById('main'), {attributes: true, subtree: true, attributeFilter: ['value']});
"""


def usage(page):
    return page.daemon.request("GET", "/api/v1/files:usage")


def stored(page, path):
    status, body = page.daemon.request(
        "GET", "/api/v1/files/" + urllib.parse.quote(path) + "?meta=1", raw=True
    )
    return json.loads(body) if status == 200 else None


def upload_row(page, name):
    return page.js(
        "for (const li of document.querySelectorAll('li[data-upload]'))"
        "  if (li.dataset.upload === arguments[0]) return li.innerText; return null",
        name,
    )


def test_a_50_mb_upload_with_progress_then_the_download_matches(page, tmp_path):
    page.ensure_logged_in()
    big = tmp_path / "big-50mb.bin"
    with open(big, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(MB))
    want = sha256_file(big)

    page.open("/files", "files")
    page.check("files")
    page.js(WATCH_PROGRESS)
    page.field("choose files").send_keys(str(big))
    page.wait(lambda: stored(page, "big-50mb.bin") is not None, "the file stored", timeout=180)
    page.wait(lambda: "uploaded" in (upload_row(page, "big-50mb.bin") or ""), "the upload marked done")
    seen = [v for (label, v, mx) in page.js("return window.__progress") if "big-50mb.bin" in label]
    assert seen and seen[-1] == 100, f"the progress bar did not reach 100 %: {seen}"
    # Whether steps between 0 and 100 % are seen depends on how fast loopback takes 50 MB
    # (XMLHttpRequest reports progress at most every 50 ms): printed, not asserted.
    assert seen == sorted(seen), f"the progress bar went backwards: {seen}"
    print(f"progress values seen during the upload: {seen}")
    assert stored(page, "big-50mb.bin")["sha256"] == want
    # The listing shows it.
    page.wait(lambda: page.find("link", "download big-50mb.bin") is not None, "the file's download link")
    page.screenshot("files-uploaded")

    page.click(page.find("link", "download big-50mb.bin"))
    got = page.wait_download("big-50mb.bin", timeout=180)
    assert sha256_file(got) == want, "the downloaded file differs from the uploaded one"
    os.unlink(got)


def test_many_files_dropped_at_once_each_with_its_bar(page):
    page.ensure_logged_in()
    page.open("/files?path=dropped/", "files")
    page.js(WATCH_PROGRESS)
    names = ["one.txt", "two.txt", "three.txt"]
    zone = page.js("return document.querySelector('[data-test=dropzone]') || document.getElementById('main')")
    page.js(
        """
        const [zone, names] = arguments;
        const dt = new DataTransfer();
        for (const n of names) dt.items.add(new File(['content of ' + n], n, {type: 'text/plain'}));
        for (const type of ['dragenter', 'dragover', 'drop'])
          zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
        """,
        zone,
        names,
    )
    for n in names:
        page.wait(lambda: stored(page, f"dropped/{n}") is not None, f"dropped/{n} stored")
        page.wait(lambda: "uploaded" in (upload_row(page, n) or ""), f"{n}'s upload marked done")
    labels = {label for (label, _, _) in page.js("return window.__progress")}
    for n in names:
        assert any(n in l for l in labels), f"no progress bar of its own for {n}: {labels}"
    page.check("files-dropped")


def test_quota_refusals_are_shown(page, tmp_path):
    page.ensure_logged_in()
    page.open("/files", "files")
    # Another client fills the quota up to 1 MiB after the page read the usage: the page's
    # own check lets the next upload go, and the daemon refuses it (507).
    u = usage(page)
    fill = FILES_QUOTA - u["used_bytes"] - MB
    assert fill > 0, u
    page.daemon.request("PUT", "/api/v1/files/filler.bin", os.urandom(fill),
                        headers={"Content-Type": "application/octet-stream"})
    two = tmp_path / "two-mb.bin"
    two.write_bytes(os.urandom(2 * MB))
    page.allow(r"/api/v1/files/two-mb\.bin - Failed to load resource: the server responded with a status of 507")
    page.field("choose files").send_keys(str(two))
    page.wait(lambda: "failed" in (upload_row(page, "two-mb.bin") or ""), "the upload marked failed")
    msg = upload_row(page, "two-mb.bin")
    assert re.search(r"quota|storage|space|full|max-total-size", msg, re.I), msg
    assert stored(page, "two-mb.bin") is None
    page.screenshot("files-quota")

    # Once the page knows the usage, it says so before sending anything.
    page.open("/files", "files")
    page.field("choose files").send_keys(str(two))
    page.wait(lambda: "failed" in (upload_row(page, "two-mb.bin") or ""), "the upload refused")
    msg = upload_row(page, "two-mb.bin")
    assert re.search(r"quota|fit|space", msg, re.I), msg
    page.daemon.request("DELETE", "/api/v1/files/filler.bin")


def test_an_upload_can_be_cancelled(page, tmp_path):
    page.ensure_logged_in()
    slow = tmp_path / "cancel-me.bin"
    slow.write_bytes(os.urandom(4 * MB))
    page.open("/files", "files")
    page.js(WATCH_PROGRESS)
    # Throttle the browser's uploads (256 KiB/s) so the upload is surely still going when the
    # test presses Cancel.
    page.d.execute_cdp_cmd("Network.enable", {})
    page.d.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 256 * 1024})
    try:
        page.field("choose files").send_keys(str(slow))
        page.wait(lambda: any("cancel-me.bin" in l and 0 < v < 100 for (l, v, _) in page.js("return window.__progress")),
                  "the upload under way")
        page.click(page.button("cancel upload of cancel-me.bin"))
        page.wait(lambda: "cancelled" in (upload_row(page, "cancel-me.bin") or ""), "the upload marked cancelled")
    finally:
        page.d.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        page.d.execute_cdp_cmd("Network.disable", {})
    assert stored(page, "cancel-me.bin") is None, "a cancelled upload was stored"
    page.screenshot("files-cancelled")
