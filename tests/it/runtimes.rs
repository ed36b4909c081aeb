//! `GET /api/v1/runtimes` against the real daemon: the list matches this host (python3 where
//! it is, with the version it prints), a runtime configured to a missing interpreter is listed
//! as not present with its reason and refuses a program upload naming it, and a config reload
//! is seen.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Daemon, Options};
use crate::http;

const CONFIG: &str = "[rate-limit]\nenabled = false\n\
    [programs.runtimes]\npy = \"python3\"\nsh = \"sh\"\nxyz = \"no-such-runtime-here\"\n\
    qq = \"/opt/no/such/interp\"\n";

fn get(d: &Daemon, token: &str, path: &str) -> http::Response {
    let auth = format!("Bearer {token}");
    http::request(&d.tcp, "GET", path, &[("Authorization", &auth)], b"")
}

fn runtimes(d: &Daemon, token: &str) -> Vec<Value> {
    let r = get(d, token, "/api/v1/runtimes");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"].as_array().unwrap().clone()
}

fn by_name<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no runtime {name} in {items:?}"))
}

/// Where jobs find `name`: the first of their PATH that has it.
fn on_host(name: &str) -> Option<String> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).is_file())
}

#[test]
fn the_runtimes_listed_are_the_hosts() {
    let d = Daemon::start_with(Options {
        config: CONFIG.into(),
        ..Options::default()
    });
    let token = d.admin_token();
    assert_eq!(
        http::request(&d.tcp, "GET", "/api/v1/runtimes", &[], b"").status,
        401
    );
    let items = runtimes(&d, &token);
    let names: Vec<&str> = items.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "/opt/no/such/interp",
            "no-such-runtime-here",
            "python3",
            "sh"
        ]
    );

    let py = by_name(&items, "python3");
    assert_eq!(py["extensions"], serde_json::json!(["py"]));
    match on_host("python3") {
        Some(path) => {
            assert_eq!(py["present"], true, "{py}");
            assert_eq!(py["interpreter"], path.as_str());
            assert!(py.get("reason").is_none(), "{py}");
            let out = std::process::Command::new(&path)
                .arg("--version")
                .output()
                .unwrap();
            let printed = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            let printed = String::from_utf8(printed).unwrap();
            assert_eq!(py["version"], printed.trim(), "{py}");
            assert!(printed.starts_with("Python 3."), "{printed}");
        }
        None => {
            assert_eq!(py["present"], false, "{py}");
            assert!(py["reason"].as_str().unwrap().contains("python3"), "{py}");
        }
    }
    // sh is on every host; dash has no --version (exit 2), so no version there.
    let sh = by_name(&items, "sh");
    assert_eq!(sh["present"], true, "{sh}");
    assert_eq!(sh["interpreter"], on_host("sh").unwrap().as_str());

    let missing = by_name(&items, "no-such-runtime-here");
    assert_eq!(missing["present"], false);
    assert_eq!(missing["interpreter"], Value::Null);
    assert_eq!(missing["version"], Value::Null);
    assert_eq!(missing["extensions"], serde_json::json!(["xyz"]));
    let why = missing["reason"].as_str().unwrap();
    assert!(
        why.contains("no-such-runtime-here") && why.contains("not installed"),
        "{why}"
    );
    let abs = by_name(&items, "/opt/no/such/interp");
    assert_eq!(abs["present"], false);
    assert!(
        abs["reason"]
            .as_str()
            .unwrap()
            .contains("/opt/no/such/interp"),
        "{abs}"
    );

    // The same answer again (the versions come from the cache now).
    assert_eq!(runtimes(&d, &token), items);
}

#[test]
fn a_missing_runtime_refuses_the_upload_with_its_name() {
    let mut d = Daemon::start_with(Options {
        config: CONFIG.into(),
        ..Options::default()
    });
    let token = d.admin_token();
    let auth = format!("Bearer {token}");
    let upload = |d: &Daemon, name: &str| {
        http::request(
            &d.tcp,
            "POST",
            &format!("/api/v1/programs?name={name}"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/octet-stream"),
            ],
            b"print 1\n",
        )
    };
    let r = upload(&d, "job.xyz");
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unprocessable");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("no-such-runtime-here") && msg.contains(".xyz"),
        "{msg}"
    );
    // Nothing kept: no program listed, no directory left.
    let list = get(&d, &token, "/api/v1/programs").json();
    assert_eq!(list["items"], serde_json::json!([]));
    let left: Vec<_> = std::fs::read_dir(d.state_dir().join("programs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // An extension no runtime claims is kept (a main may be chosen later); a present runtime
    // is accepted.
    assert_eq!(upload(&d, "notes.txt").status, 201);
    assert_eq!(upload(&d, "ok.sh").status, 201);

    // A reload that configures the extension to a present interpreter lists and accepts it.
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(
        &d.config_path,
        text.replace("xyz = \"no-such-runtime-here\"", "xyz = \"sh\""),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let items = runtimes(&d, &token);
        if by_name(&items, "sh")["extensions"] == serde_json::json!(["sh", "xyz"]) {
            assert!(items.iter().all(|r| r["name"] != "no-such-runtime-here"));
            break;
        }
        assert!(Instant::now() < deadline, "reload not seen: {items:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(upload(&d, "job.xyz").status, 201);
    d.stop();
}
