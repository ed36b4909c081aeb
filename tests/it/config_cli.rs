//! `check-config` and `serve` with good and bad configs: exit codes and messages that name the
//! file, line and key; nothing READY on a bad config.

use std::time::Duration;

use crate::harness::{Daemon, Options, run_cli};

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("config.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn check_config_without_a_file_prints_defaults_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.toml");
    // A path named on the command line must exist…
    let (code, _, err) = run_cli(
        &["check-config", "--config", missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("cannot read config file"), "{err}");
    // …while an empty file means every default.
    let p = write(&dir, "");
    let (code, out, err) = run_cli(&["check-config", "--config", &p], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listen = [\"127.0.0.1:8080\"]"), "{out}");
    assert!(out.contains("shutdown-timeout = \"30s\""), "{out}");
    let parsed: toml::Value = toml::from_str(&out).unwrap();
    assert!(parsed.get("server").is_some());
}

#[test]
fn check_config_reads_localhostd_config_env() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "[server]\nmax-body-size = \"3MiB\"\n");
    let (code, out, _) = run_cli(&["check-config"], &[("LOCALHOSTD_CONFIG", &p)]);
    assert_eq!(code, 0);
    assert!(out.contains("max-body-size = \"3MiB\""), "{out}");
}

#[test]
fn check_config_explains_what_enabled_tunnels_expose() {
    let dir = tempfile::tempdir().unwrap();
    // Off (the default): nothing about tunnels.
    let p = write(&dir, "");
    let (code, _, err) = run_cli(&["check-config", "--config", &p], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("tunnels are ENABLED"), "{err}");
    // On: what a tunnel exposes, with the public listener it forwards to.
    let p = write(
        &dir,
        "[tunnels]\nenabled = true\nlisten = \"127.0.0.1:9443\"\n",
    );
    let (code, out, err) = run_cli(&["check-config", "--config", &p], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("enabled = true"), "{out}");
    for said in [
        "tunnels are ENABLED",
        "public listener 127.0.0.1:9443",
        "no loopback privileges",
        "passes the Host check (only while it is up)",
        "docs/security.md",
    ] {
        assert!(err.contains(said), "{said:?} not in {err}");
    }
}

#[test]
fn bad_configs_exit_78_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "# ok\n[server]\nlisen = [\"127.0.0.1:1\"]\n",
            ":3:1: key `server.lisen`: unknown field",
        ),
        (
            "[server]\nmax-connections = \"lots\"\n",
            ":2:19: key `server.max-connections`: invalid type",
        ),
        (
            "[storage]\nmin-free-disk = \"12 bananas\"\n",
            ":2:17: key `storage.min-free-disk`: invalid size",
        ),
        (
            "[server]\nheader-timeout = \"fortnight\"\n",
            ":2:18: key `server.header-timeout`: invalid duration",
        ),
    ];
    for (text, expected) in cases {
        let p = write(&dir, text);
        for args in [
            vec!["check-config", "--config", &p],
            vec!["serve", "--config", &p],
        ] {
            let (code, _, err) = run_cli(&args, &[]);
            assert_eq!(code, 78, "{args:?} {text:?}: {err}");
            assert!(
                err.contains(&format!("{p}{expected}")),
                "{args:?}: expected {expected:?} in {err}"
            );
        }
    }
}

#[test]
fn serve_with_bad_config_never_says_ready() {
    let mut d = Daemon::start_with(Options {
        config: "[log]\nformat = \"xml\"\n".into(),
        wait_ready: false,
        ..Options::default()
    });
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78));
    assert!(
        !d.notes.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "{:?}",
        d.notes
    );
    assert!(
        d.notes
            .iter()
            .any(|m| m.contains("STATUS=invalid configuration")),
        "{:?}",
        d.notes
    );
    assert!(d.logs().contains("key `log.format`"), "{}", d.logs());
}
