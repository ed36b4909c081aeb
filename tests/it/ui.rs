//! The web UI in a real browser (issue 26): runs the pytest + selenium suite in `tests/ui`
//! against the binary cargo built, driving Debian's Chromium through `/usr/bin/chromedriver`.
//! The suite starts its own daemon and one browser for all its scenarios (see
//! tests/ui/conftest.py); its output (each scenario, and the screenshots it saved under
//! target/ui-screenshots/) is printed as it runs.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` and the Python packages of
//! tests/ui/requirements.txt in `$LOCALHOSTD_TEST_PYTHON` (else `target/ci-venv/bin/python3`,
//! else `python3`). Without them it prints why it skipped; with `CI` set it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::BIN;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: [&str; 2] = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python to run pytest with, and whether it was asked for explicitly.
fn python() -> (String, bool) {
    if let Ok(p) = std::env::var("LOCALHOSTD_TEST_PYTHON") {
        return (p, true);
    }
    let venv = repo().join("target/ci-venv/bin/python3");
    if venv.exists() {
        return (venv.display().to_string(), false);
    }
    ("python3".to_owned(), false)
}

/// What this machine lacks to run the suite (empty when nothing).
fn missing(python: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !CHROMIUM.iter().any(|p| Path::new(p).exists()) {
        out.push("Chromium (Debian package chromium)".to_owned());
    }
    if !Path::new(CHROMEDRIVER).exists() {
        out.push(format!("{CHROMEDRIVER} (Debian package chromium-driver)"));
    }
    let probe = Command::new(python)
        .args(["-c", "import pytest, selenium"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => out.push(format!(
            "pytest and selenium in {python} (pip install -r tests/ui/requirements.txt): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        )),
        Err(e) => out.push(format!("{python}: {e}")),
    }
    out
}

#[test]
fn the_ui_in_a_real_browser() {
    let (python, explicit) = python();
    let lacking = missing(&python);
    if !lacking.is_empty() {
        assert!(
            std::env::var_os("CI").is_none() && !explicit,
            "the browser tests cannot run: {} missing (.ci/run installs them)",
            lacking.join("; ")
        );
        eprintln!(
            "SKIPPED: the browser tests need {} (see docs/ui.md)",
            lacking.join("; ")
        );
        return;
    }
    // The suite's own output goes straight to this process's stdout and stderr, so a long
    // run shows its progress, and a failure its details, in the CI log.
    let status = Command::new(&python)
        .args(["-m", "pytest", "tests/ui", "-v", "--color=no"])
        .current_dir(repo())
        .env("LOCALHOSTD_BIN", BIN)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    // pytest: 0 all passed, 1 some failed, 5 none collected (also a failure here).
    assert!(
        status.success(),
        "the browser tests failed ({status}): their output is above; screenshots in \
         target/ui-screenshots/"
    );
}
