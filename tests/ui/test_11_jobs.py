"""Jobs on the user's data (issue 27): the runtimes on the programs page match the API and the
host; a command run in the background from the console is listed on the Jobs page, its output
followed live, and a long one cancelled; a run with a mounted folder, an inline file and an
output folder shows the committed file, linked to the Files page."""

import os
import re
import shutil
import subprocess
import urllib.parse


def text_of(page, selector):
    return page.js(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", selector
    )


def shown_alert(page):
    return page.js(
        "for (const el of document.querySelectorAll('[role=alert]')) {"
        "  const t = el.textContent.trim(); if (t) return t; }"
        "return null"
    )


def wait_unless_refused(page, cond, what, timeout=60):
    """Waits for `cond`, failing at once with the page's message when it shows an error
    instead (a refused request)."""
    got = page.wait(lambda: cond() or (("alert", shown_alert(page)) if shown_alert(page) else None), what, timeout)
    assert not (isinstance(got, tuple) and got[0] == "alert"), f"{what}: the page says {got[1]!r}"
    return got


def open_run_options(page):
    summary = page.wait(lambda: page.js("return document.querySelector('details.run-options > summary')"),
                        "the run options")
    if not page.js("return document.querySelector('details.run-options').open"):
        page.click(summary)


def test_runtimes_are_listed_on_the_programs_page(page):
    page.ensure_logged_in()
    page.open("/programs", "programs")
    page.text("Runtimes")
    api = page.daemon.request("GET", "/api/v1/runtimes")["items"]
    assert api, "no runtimes configured in the test daemon"
    rows = page.wait(lambda: page.js(
        "return [...document.querySelectorAll('[data-test=runtimes] tbody tr')]"
        ".map(tr => [...tr.children].map(td => td.textContent.trim()))") or None,
        "the runtimes table")
    assert [r[0] for r in rows] == [r["name"] for r in api], rows
    py = next(r for r in rows if r[0] == "python3")
    host_py = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if host_py:
        assert py[2] == "present", py
        version = subprocess.run([host_py, "--version"], capture_output=True, text=True).stdout.strip()
        assert py[3] == version, (py, version)
        assert py[4] == host_py, py
    else:
        assert py[2] == "missing", py
    # A runtime the host lacks says so, with the reason (ruby is not on these machines).
    missing = [r for r in api if not r["present"]]
    for m in missing:
        row = next(r for r in rows if r[0] == m["name"])
        assert row[2] == "missing" and row[4] == m["reason"], (row, m)
    page.check("programs-runtimes")


def test_a_background_command_is_followed_and_cancelled_on_the_jobs_page(page):
    page.ensure_logged_in()
    page.open("/console", "console")
    # A quick one in the background: listed on the Jobs page, its output there once finished.
    page.set_value("command", "echo quick-$((6*7))", exact=True)
    page.click(page.field("run in the background"))
    page.click(page.button("run", exact=True))
    wait_unless_refused(page, lambda: page.find("link", "follow it on the jobs page"), "the background job started")
    link = page.link("follow it on the jobs page")
    quick_id = urllib.parse.parse_qs(urllib.parse.urlparse(link.get_attribute("href")).query)["id"][0]

    page.open("/jobs", "jobs")
    page.wait(lambda: any(quick_id in (a.get_attribute("href") or "")
                          for a in page.d.find_elements("css selector", "[data-test=job-link]")),
              "the background job in the list")
    page.check("jobs")
    page.open(f"/jobs?id={quick_id}", "jobs")
    page.wait(lambda: "quick-42" in text_of(page, "[data-test=job-output]"), "the quick job's output", timeout=60)
    page.wait(lambda: "finished" in text_of(page, "[data-test=job-state]"), "the quick job finished", timeout=60)
    assert "$((6*7))" not in text_of(page, "[data-test=job-output]")

    # A long one: its output followed while it runs, then cancelled.
    page.open("/console", "console")
    page.set_value("command", "echo long-started; sleep 120; echo never-printed", exact=True)
    page.click(page.field("run in the background"))
    page.click(page.button("run", exact=True))
    wait_unless_refused(page, lambda: page.find("link", "follow it on the jobs page"), "the long job started")
    page.click(page.link("follow it on the jobs page"))
    page.wait_ready("jobs")
    long_id = urllib.parse.parse_qs(urllib.parse.urlparse(page.url()).query)["id"][0]
    wait_unless_refused(page, lambda: "long-started" in text_of(page, "[data-test=job-output]"),
                        "the running job's output, live")
    state = page.daemon.request("GET", f"/api/v1/executions/{long_id}")
    assert state["state"] == "running", state
    assert re.search(r"running", text_of(page, "[data-test=job-state]"), re.I)
    page.screenshot("jobs-detail-running")
    page.check("jobs-detail")
    page.click(page.button("cancel", exact=True))
    page.wait(lambda: "cancelled" in text_of(page, "[data-test=job-state]"), "the job cancelled", timeout=60)
    rec = page.daemon.request("GET", f"/api/v1/executions/{long_id}")
    assert rec["state"] == "finished" and rec["status"] == "cancelled", rec
    assert "never-printed" not in text_of(page, "[data-test=job-output]")
    assert page.find("button", "cancel", exact=True) is None, "Cancel still offered for a finished job"

    # The state filter: the cancelled job is among the finished ones, not the running ones.
    page.open("/jobs?state=running", "jobs")
    page.wait(lambda: page.js("return document.querySelector('[data-test=jobs-list] tbody')") is not None, "the list")
    assert long_id not in page.js("return document.querySelector('[data-test=jobs-list]').innerHTML")
    page.open("/jobs?state=finished", "jobs")
    page.wait(lambda: long_id in page.js("return document.querySelector('[data-test=jobs-list]').innerHTML"),
              "the cancelled job among the finished")


def test_a_run_with_an_output_folder_lists_the_committed_file(page):
    page.ensure_logged_in()
    page.daemon.request("PUT", "/api/v1/files/ui-in/words.txt", b"mounted words\n",
                        headers={"Content-Type": "application/octet-stream"})
    page.open("/console", "console")
    page.set_value("command", "mkdir -p out && cat note.txt /data/words.txt | tr a-z A-Z > out/shout.txt"
                   " && cat out/shout.txt", exact=True)
    open_run_options(page)
    page.click(page.button("add a mount"))
    page.js("document.querySelector('[data-test=mount-source]').value = 'ui-in/'")
    page.js("document.querySelector('[data-test=mount-at]').value = '/data'")
    page.click(page.button("add a file"))
    page.js("document.querySelector('[data-test=file-name]').value = 'note.txt'")
    page.js("document.querySelector('[data-test=file-content]').value = 'inline words\\n'")
    page.click(page.button("add an output"))
    page.js("document.querySelector('[data-test=output-to]').value = 'ui-results/run-1/'")
    page.check("console-options")
    page.click(page.button("run", exact=True))
    wait_unless_refused(page, lambda: "INLINE WORDS" in page.js(
        "const o = document.querySelector('[role=log]'); return o ? o.textContent : ''"),
        "the job's output")
    assert "MOUNTED WORDS" in page.js("return document.querySelector('[role=log]').textContent")
    report = page.wait(lambda: text_of(page, "[data-test=outputs-report]") or None, "the outputs report", timeout=60)
    assert "committed" in report, report
    link = page.link("ui-results/run-1/shout.txt")
    assert link.get_attribute("href").endswith("/files?path=ui-results%2Frun-1%2F"), link.get_attribute("href")
    status, body = page.daemon.request("GET", "/api/v1/files/ui-results/run-1/shout.txt", raw=True)
    assert status == 200 and body == b"INLINE WORDS\nMOUNTED WORDS\n", (status, body)
    page.screenshot("console-outputs")
    page.click(link)
    page.wait_ready("files")
    page.text("shout.txt")


def test_a_program_run_in_the_background_and_its_output_from_the_run_history(page):
    page.ensure_logged_in()
    prog = page.daemon.request("POST", "/api/v1/programs?name=bg-prog.sh",
                               b'#!/bin/sh\necho "prog-out-$1"\necho "prog-err" >&2\n',
                               headers={"Content-Type": "application/octet-stream"})
    page.open(f"/programs?id={prog['id']}", "programs")
    page.set_value("arguments, one per line", "bg")
    page.click(page.field("run in the background"))
    page.click(page.button("run", exact=True))
    wait_unless_refused(page, lambda: page.find("link", "follow it on the jobs page"), "the background run started")
    page.click(page.link("follow it on the jobs page"))
    page.wait_ready("jobs")
    page.wait(lambda: "prog-out-bg" in text_of(page, "[data-test=job-output]")
              and "prog-err" in text_of(page, "[data-test=job-output]"), "the run's output", timeout=60)
    page.wait(lambda: "finished" in text_of(page, "[data-test=job-state]"), "the run finished", timeout=60)
    page.link("bg-prog.sh")  # the detail names the program, linked to its page

    # The program's run history opens each run's output.
    page.open(f"/programs?id={prog['id']}", "programs")
    page.click(page.link("show output"))
    page.wait_ready("jobs")
    page.wait(lambda: "prog-out-bg" in text_of(page, "[data-test=job-output]"), "the stored output", timeout=30)
    page.check("jobs-program-run")
