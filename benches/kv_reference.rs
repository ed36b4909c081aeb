//! The reference servers behind issue 6's "measured here for reference" figures, run by
//! `benches/kv.sh` in the same run as ours and etcd, so that every entry shows how fast the
//! machine was at that moment against the issue's own reference measurements:
//!
//! - `GET /bare`: a bare axum handler returning 1 KiB (the issue: ≈ 136k req/s, "the
//!   framework's ceiling");
//! - `GET /kv/{key}`: a naive rusqlite GET through `spawn_blocking` (≈ 40k/s);
//! - `PUT /kv/{key}`: naive group commit (≈ 30k PUT/s): one writer thread takes every PUT that
//!   is waiting and commits them in one transaction, WAL with `synchronous=FULL`, one fsync,
//!   and only then answers each. One table, no versions history, no audit, no auth.
//!
//! Nothing here is localhostd: it is the plain way to write each (the issue does not give its
//! code), on the same crates and the same SQLite build as ours. Usage: `kv-reference ADDR DIR`
//! (listens on ADDR, keeps its database in DIR).

use std::cell::RefCell;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, mpsc};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Json, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A PUT for the writer: the key, the value's JSON text, and where the answer goes.
struct Put {
    key: String,
    value: String,
    done: oneshot::Sender<Result<i64, String>>,
}

#[derive(Clone)]
struct App {
    db: Arc<PathBuf>,
    writer: mpsc::Sender<Put>,
    bare: Bytes,
}

/// The size of the bare handler's answer and of the benchmark's values.
const ONE_KIB: usize = 1024;

fn open(path: &FsPath) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

/// The naive group commit: everything waiting, one transaction, one fsync, then the answers.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Put>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let result = (|| -> rusqlite::Result<Vec<i64>> {
            let tx = conn.transaction()?;
            let mut versions = Vec::with_capacity(group.len());
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO kv(key, value, version) VALUES (?1, ?2, 1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = version + 1
                     RETURNING version",
                )?;
                for p in &group {
                    versions.push(st.query_row(params![p.key, p.value], |r| r.get(0))?);
                }
            }
            tx.commit()?;
            Ok(versions)
        })();
        match result {
            Ok(versions) => {
                for (p, v) in group.into_iter().zip(versions) {
                    let _ = p.done.send(Ok(v));
                }
            }
            Err(e) => {
                for p in group {
                    let _ = p.done.send(Err(e.to_string()));
                }
            }
        }
    }
}

thread_local! {
    static READER: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

async fn kv_get(
    State(app): State<App>,
    Path(key): Path<String>,
) -> Result<([(&'static str, &'static str); 1], String), StatusCode> {
    let got = tokio::task::spawn_blocking(move || {
        READER.with(|cell| -> rusqlite::Result<Option<String>> {
            let mut slot = cell.borrow_mut();
            let c = match slot.as_mut() {
                Some(c) => c,
                None => slot.insert(open(&app.db)?),
            };
            c.prepare_cached("SELECT value, version FROM kv WHERE key = ?1")?
                .query_row([&key], |r| {
                    let (text, version): (String, i64) = (r.get(0)?, r.get(1)?);
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let body = json!({"key": key, "value": value, "version": version.to_string()});
                    Ok(body.to_string())
                })
                .optional()
        })
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let body = got.ok_or(StatusCode::NOT_FOUND)?;
    Ok(([("content-type", "application/json")], body))
}

async fn kv_put(
    State(app): State<App>,
    Path(key): Path<String>,
    Json(value): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    let (done, answer) = oneshot::channel();
    let put = Put {
        key: key.clone(),
        value: value.to_string(),
        done,
    };
    app.writer
        .send(put)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    match answer.await {
        Ok(Ok(version)) => Ok(Json(json!({"key": key, "version": version.to_string()}))),
        _ => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn bare(State(app): State<App>) -> ([(&'static str, &'static str); 1], Bytes) {
    ([("content-type", "application/json")], app.bare)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, dir] = args.as_slice() else {
        bail!("usage: kv-reference ADDR DIR");
    };
    let db = PathBuf::from(dir).join("reference.db");
    let conn = open(&db).with_context(|| format!("opening {}", db.display()))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,
                                        version INTEGER NOT NULL)",
    )?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer(conn, rx))?;
    let app = App {
        db: Arc::new(db),
        writer: tx,
        bare: Bytes::from(format!("\"{}\"", "x".repeat(ONE_KIB - 2))),
    };
    let router = Router::new()
        .route("/bare", get(bare))
        .route("/kv/{key}", get(kv_get).put(kv_put))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(addr.as_str())
        .await
        .with_context(|| format!("binding {addr}"))?;
    axum::serve(listener, router).await?;
    Ok(())
}
