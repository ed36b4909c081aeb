//! What jobs can run here: the runtimes of `programs.runtimes` (file extension → interpreter),
//! one entry per interpreter with its extensions, where it was found, whether a job can use it
//! and the version it reports.
//!
//! The version is asked of the interpreter itself (`--version`), run directly by the daemon
//! (not in the sandbox: it is the host's own binary, named by the administrator's config)
//! with an empty environment but `PATH` and `LC_ALL=C`, `/` as its cwd, no stdin, for at most
//! [`VERSION_TIMEOUT`] and [`VERSION_MAX_BYTES`] of output. Each interpreter is asked once and
//! the answer kept for the daemon's life, until a config reload (then it is asked again).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use crate::config::{Config, LiveConfig};
use crate::jobs::sandbox::child::SYSTEM_DIRS;

/// Directories searched for an interpreter named without a path (what jobs see as PATH).
pub const SEARCH_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];
/// Longest an interpreter may take to tell its version.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes read of each of its stdout and stderr.
pub const VERSION_MAX_BYTES: usize = 4096;
/// Longest version line kept (characters).
const VERSION_MAX_CHARS: usize = 200;

/// One runtime: an interpreter and the extensions it runs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Runtime {
    /// The interpreter as configured (a command name or an absolute path).
    pub name: String,
    /// The file extensions it runs (without the dot), sorted.
    pub extensions: Vec<String>,
    /// Where it was found; null when it was not.
    pub interpreter: Option<String>,
    /// The first line it prints for `--version`; null when missing, or when it exits with an
    /// error, prints nothing, or takes longer than 2 s.
    pub version: Option<String>,
    /// Whether jobs can run it: found, executable, and inside the system directories jobs see.
    pub present: bool,
    /// Why it is not present (absent when it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Finds the interpreter `name` as jobs will run it: an absolute path as it is, a command name
/// in [`SEARCH_PATH`]. `Err` says why it cannot be used.
pub fn locate(name: &str) -> Result<String, String> {
    let usable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if name.starts_with('/') {
        if !usable(Path::new(name)) {
            return Err(format!("{name} is not an executable file on this host"));
        }
        name.to_owned()
    } else {
        SEARCH_PATH
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| usable(p))
            .map(|p| p.display().to_string())
            .ok_or_else(|| format!("{name} is not installed ({})", SEARCH_PATH.join(", ")))?
    };
    // Jobs see the host's system directories only: a binary elsewhere (or a symlink to one)
    // is not there for them.
    let real =
        std::fs::canonicalize(&found).map_err(|e| format!("{found} cannot be resolved: {e}"))?;
    let visible = SYSTEM_DIRS
        .iter()
        .filter(|d| **d != "/etc")
        .any(|d| real.starts_with(d));
    if !visible {
        return Err(format!(
            "{found} is at {}, outside the system directories jobs see",
            real.display()
        ));
    }
    Ok(found)
}

/// The configured runtimes grouped by interpreter (sorted by name), extensions sorted.
pub fn configured(runtimes: &BTreeMap<String, String>) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ext, interp) in runtimes {
        by.entry(interp.clone()).or_default().push(ext.clone());
    }
    by
}

/// The runtimes list, with the versions asked once per config.
#[derive(Clone)]
pub struct Runtimes {
    live: Arc<LiveConfig>,
    cache: Arc<Mutex<Cache>>,
}

/// Versions by interpreter path, for the config they were asked under.
#[derive(Default)]
struct Cache {
    config: Option<Arc<Config>>,
    versions: HashMap<String, Arc<OnceCell<Option<String>>>>,
}

impl Runtimes {
    pub fn new(live: Arc<LiveConfig>) -> Runtimes {
        Runtimes {
            live,
            cache: Arc::default(),
        }
    }

    /// Every configured runtime, as this host has it now.
    pub async fn list(&self) -> Vec<Runtime> {
        let cfg = self.live.get();
        let groups = configured(&cfg.programs.runtimes);
        let mut out = Vec::with_capacity(groups.len());
        let mut asks = Vec::new();
        for (name, extensions) in groups {
            let (interpreter, reason) = match locate(&name) {
                Ok(p) => (Some(p), None),
                Err(r) => (None, Some(r)),
            };
            if let Some(p) = &interpreter {
                let cell = self.cell(&cfg, p);
                let p = p.clone();
                asks.push(async move { cell.get_or_init(|| ask_version(p)).await.clone() });
            }
            out.push(Runtime {
                name,
                extensions,
                present: interpreter.is_some(),
                interpreter,
                version: None,
                reason,
            });
        }
        // Asked concurrently: a slow interpreter costs its own timeout once, not the sum.
        let mut versions = futures_util::future::join_all(asks).await.into_iter();
        for r in out.iter_mut().filter(|r| r.present) {
            r.version = versions.next().flatten();
        }
        out
    }

    /// The version cell of `path` under `cfg`; a new config forgets every version.
    fn cell(&self, cfg: &Arc<Config>, path: &str) -> Arc<OnceCell<Option<String>>> {
        let mut c = match self.cache.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !c.config.as_ref().is_some_and(|old| Arc::ptr_eq(old, cfg)) {
            c.config = Some(cfg.clone());
            c.versions.clear();
        }
        c.versions.entry(path.to_owned()).or_default().clone()
    }
}

/// Runs `path --version` (see the module comment) and keeps the first non-empty line of its
/// stdout, or of its stderr when stdout has none (Python 2, Java), when it exits with 0.
async fn ask_version(path: String) -> Option<String> {
    let mut child = tokio::process::Command::new(&path)
        .arg("--version")
        .env_clear()
        .env("PATH", SEARCH_PATH.join(":"))
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| tracing::warn!(interpreter = %path, error = %e, "cannot ask the version"))
        .ok()?;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let asked = async {
        let (out, err) = tokio::join!(read_bounded(out), read_bounded(err));
        // Past the bound the pipes are closed: an interpreter still writing ends on EPIPE.
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(VERSION_TIMEOUT, asked).await {
        Ok(done) => done,
        Err(_) => {
            tracing::warn!(interpreter = %path, "no version within 2 s; killed");
            // kill_on_drop ends it; the runtime reaps it.
            return None;
        }
    };
    if !status.is_ok_and(|s| s.success()) {
        return None;
    }
    first_line(&out).or_else(|| first_line(&err))
}

async fn read_bounded(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(p) = pipe {
        let _ = p.take(VERSION_MAX_BYTES as u64).read_to_end(&mut buf).await;
    }
    buf
}

/// The first line with something on it, trimmed and cut to [`VERSION_MAX_CHARS`].
fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(VERSION_MAX_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_grouped_by_interpreter() {
        let m: BTreeMap<String, String> = [("mjs", "node"), ("js", "node"), ("py", "python3")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let g = configured(&m);
        assert_eq!(g["node"], ["js", "mjs"]);
        assert_eq!(g["python3"], ["py"]);
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn interpreters_are_found_or_refused_with_a_reason() {
        assert_eq!(
            locate("sh").unwrap(),
            SEARCH_PATH
                .iter()
                .map(|d| format!("{d}/sh"))
                .find(|p| Path::new(p).exists())
                .unwrap()
        );
        let e = locate("no-such-interpreter-here").unwrap_err();
        assert!(e.contains("not installed"), "{e}");
        let e = locate("/no/such/python").unwrap_err();
        assert!(e.contains("/no/such/python"), "{e}");
        // Found, but not where jobs can see it.
        let t = tempfile::tempdir().unwrap();
        let exe = t.path().join("interp");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = locate(exe.to_str().unwrap()).unwrap_err();
        assert!(e.contains("outside the system directories"), "{e}");
    }

    #[test]
    fn the_first_line_with_text_is_the_version() {
        assert_eq!(
            first_line(b"\nThis is perl 5\nmore\n").unwrap(),
            "This is perl 5"
        );
        assert_eq!(first_line(b"  \n\n"), None);
        assert_eq!(first_line(&[b'x'; 500]).unwrap().len(), VERSION_MAX_CHARS);
    }

    #[tokio::test]
    async fn a_version_is_asked_and_a_failing_interpreter_has_none() {
        let sh = locate("sh").unwrap();
        // dash refuses --version (exit 2); bash answers. Either way: no panic, and an
        // answer only on success.
        let v = ask_version(sh.clone()).await;
        let real = std::process::Command::new(&sh)
            .arg("--version")
            .output()
            .unwrap();
        assert_eq!(v.is_some(), real.status.success(), "{v:?}");
        assert_eq!(ask_version("/no/such/binary".into()).await, None);
    }
}
