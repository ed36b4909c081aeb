"""The programs page: upload a single script and run it with arguments and stdin, its output
streaming in before the run ends; a ZIP project, run to its result; the run history."""

import io
import re
import urllib.parse
import zipfile

SCRIPT = """#!/bin/sh
printf 'hello from %s\\n' "$1"
read line
echo "stdin said: $line"
echo "streamed-before-the-end"
# Held until the run's timeout ends it: the lines above must be on the page before that.
sleep 60
echo "never printed"
"""


def output_text(page):
    return page.js(
        "const o = document.querySelector('[role=log][aria-label*=output i], [data-test=run-output]');"
        "return o ? o.textContent : ''"
    )


def run_result(page):
    return page.js(
        "const r = document.querySelector('[data-test=run-result]'); return r ? r.textContent : null"
    )


def upload_program(page, path):
    page.open("/programs", "programs")
    page.field("program: a single file").send_keys(str(path))
    page.click(page.button("upload program"))
    page.wait(lambda: "id=" in page.url(), "the program's page after the upload")
    page.wait_ready("programs")
    return urllib.parse.parse_qs(urllib.parse.urlparse(page.url()).query)["id"][0]


def test_upload_a_script_and_watch_its_output_stream_in(page, tmp_path):
    page.ensure_logged_in()
    script = tmp_path / "greet.sh"
    script.write_text(SCRIPT)
    pid = upload_program(page, script)
    prog = page.daemon.request("GET", f"/api/v1/programs/{pid}")
    assert prog["name"] == "greet.sh" and prog["main"], prog
    page.check("programs-detail")

    page.set_value("arguments, one per line", "browser")
    page.set_value("standard input", "typed in the form\n")
    page.type_into("timeout in seconds", "6")
    page.click(page.button("run", exact=True))
    page.wait(lambda: "streamed-before-the-end" in output_text(page), "the output streams in", timeout=30)
    assert run_result(page) is None, "the output came only with the result: it did not stream"
    out = output_text(page)
    assert "hello from browser" in out and "stdin said: typed in the form" in out, out
    result = page.wait(lambda: run_result(page), "the run's result (its timeout)", timeout=40)
    assert re.search(r"timeout|timed out|killed", result, re.I), result
    assert "never printed" not in output_text(page)
    # The history lists the run.
    page.wait(lambda: page.daemon.request("GET", f"/api/v1/programs/{pid}/runs")["items"], "a run in the API")
    page.text("Run history")
    page.wait(lambda: page.js(
        "const h = [...document.querySelectorAll('h2')].find(e => /run history/i.test(e.textContent));"
        "const s = h && h.closest('section'); return s ? s.querySelectorAll('tbody tr').length : 0") >= 1,
        "the run in the page's history")
    page.check("programs-run")


def test_a_zip_project_runs(page, tmp_path):
    page.ensure_logged_in()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("main.py", "import helper\nprint('zip project says', helper.answer())\n")
        z.writestr("helper.py", "def answer():\n    return 6 * 7\n")
    project = tmp_path / "project.zip"
    project.write_bytes(buf.getvalue())
    pid = upload_program(page, project)
    prog = page.daemon.request("GET", f"/api/v1/programs/{pid}")
    assert prog["kind"] == "project" and prog["main"] == "main.py", prog
    assert {f["path"] for f in prog["files"]} == {"main.py", "helper.py"}, prog
    page.text("helper.py")
    page.click(page.button("run", exact=True))
    page.wait(lambda: "zip project says 42" in output_text(page), "the project's output", timeout=60)
    result = page.wait(lambda: run_result(page), "the run's result", timeout=60)
    assert re.search(r"exit code 0", result, re.I), result
    page.screenshot("programs-zip-run")

    # Open in a terminal: the project runs in a terminal session, its output in the rows.
    page.click(page.button("open in a terminal"))
    page.wait(lambda: page.url().startswith(page.base + "/terminal?id="), "the terminal page")
    page.wait_ready("terminal")
    page.wait(lambda: "zip project says 42" in page.js(
        "const r = document.querySelector('.xterm-rows'); return r ? r.textContent : ''"),
        "the project's output in the terminal's rows", timeout=60)

    # Listed on the programs page.
    page.open("/programs", "programs")
    page.link("project.zip")
    page.check("programs")
