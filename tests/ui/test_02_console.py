"""The console page: a command runs in the sandbox, its output and exit status shown, and it
is in the history."""

import re


def test_run_a_command_and_see_it_in_the_history(page):
    page.ensure_logged_in()
    page.open("/console", "console")
    page.check("console")
    page.set_value("command", "echo console-$((40+2)); echo to-stderr >&2; exit 5", exact=True)
    page.click(page.button("run", exact=True))
    out = page.wait(lambda: (lambda t: t if "console-42" in t and "to-stderr" in t else None)(
        page.js("const o = document.querySelector('[role=log]'); return o ? o.textContent : ''")),
        "the command's output", timeout=60)
    status = page.wait(lambda: (lambda t: t if re.search(r"exit code\s*5\b", t, re.I) else None)(
        page.js("const s = document.querySelector('[data-test=run-status]'); return s ? s.closest('section').innerText : ''")),
        "the exit code 5 shown", timeout=60)
    assert re.search(r"exited with an error|error|failed", status, re.I), status
    assert "$((40+2))" not in out, out
    page.wait(lambda: page.daemon.request("GET", "/api/v1/executions")["items"], "the execution in the API")
    page.wait(lambda: page.find("button", "use the command echo console-") is not None
              or page.has_text("echo console-$((40+2))"), "the command in the history")
    page.check("console-run")
