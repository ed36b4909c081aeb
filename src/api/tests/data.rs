//! `/api/v1/data` through the real router: CRUD, the key and value rules, compare-and-set
//! (32 concurrent clients), batches, watch streams, expiry and per-route body limits.

use std::time::Duration;

use super::*;
use crate::config::{ByteSize, HumanDuration};

struct Kv {
    app: super::super::App,
    state: AppState,
    bearer: String,
    _dir: tempfile::TempDir,
}

async fn kv_with(cfg: Config) -> Kv {
    let (dir, state) = state_with(cfg).await;
    let app = super::super::router(state.clone());
    let t = state
        .auth
        .create_token("data", Scopes::of(&[Scope::Read, Scope::Write]), None)
        .await
        .unwrap();
    Kv {
        app,
        state,
        bearer: format!("Bearer {}", t.token),
        _dir: dir,
    }
}

async fn kv() -> Kv {
    kv_with(Config::default()).await
}

impl Kv {
    async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Sent {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header("authorization", &self.bearer);
        if !body.is_empty() {
            b = b.header(header::CONTENT_LENGTH, body.len());
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                b = b.header(header::CONTENT_TYPE, "application/json");
            }
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(b.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Sent {
            status,
            headers,
            json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        }
    }
    async fn put(&self, key: &str, value: &str, headers: &[(&str, &str)]) -> Sent {
        self.raw(
            Method::PUT,
            &format!("/api/v1/data/{key}"),
            headers,
            value.as_bytes().to_vec(),
        )
        .await
    }
    async fn get(&self, key: &str) -> Sent {
        self.raw(Method::GET, &format!("/api/v1/data/{key}"), &[], vec![])
            .await
    }
    async fn post(&self, path: &str, body: serde_json::Value) -> Sent {
        self.raw(Method::POST, path, &[], body.to_string().into_bytes())
            .await
    }
    /// Opens a watch; the response head has arrived when this returns.
    async fn watch(&self, query: &str, headers: &[(&str, &str)]) -> axum::response::Response {
        let mut b = Request::builder()
            .method(Method::GET)
            .uri(format!("/api/v1/data?watch=true{query}"))
            .header(header::HOST, "localhost")
            .header("authorization", &self.bearer);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }
}

fn etag(s: &Sent) -> String {
    s.headers
        .get(header::ETAG)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn version(s: &Sent) -> u64 {
    s.json["version"].as_str().unwrap().parse().unwrap()
}

/// One parsed SSE event.
#[derive(Debug)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: serde_json::Value,
}

/// Reads SSE events from a streaming body until `n` have arrived (panics after 10 s).
struct Events {
    body: Body,
    buf: String,
}

impl Events {
    fn new(resp: axum::response::Response) -> Events {
        Events {
            body: resp.into_body(),
            buf: String::new(),
        }
    }
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Sse {
                    id: None,
                    event: "message".into(),
                    data: serde_json::Value::Null,
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().parse().unwrap());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data = serde_json::from_str(v.trim()).unwrap();
                        any = true;
                    }
                }
                if any {
                    return ev;
                }
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("no SSE event within 10 s")
                .expect("stream ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
    async fn changes(&mut self, n: usize) -> Vec<Sse> {
        let mut out = Vec::new();
        while out.len() < n {
            let ev = self.next().await;
            if ev.event != "progress" {
                out.push(ev);
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_round_trip_with_versions_as_etags() {
    let k = kv().await;
    let r = k
        .put("app/config", r#"{"debug": true, "n": [1, 2]}"#, &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["key"], "app/config");
    let v1 = version(&r);
    assert_eq!(etag(&r), format!("\"{v1}\""));

    let g = k.get("app/config").await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(
        g.json["value"],
        serde_json::json!({"debug": true, "n": [1, 2]})
    );
    assert_eq!(version(&g), v1);
    assert_eq!(etag(&g), format!("\"{v1}\""));
    assert_eq!(
        g.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );

    // %2F is the same key as /.
    let g2 = k.get("app%2Fconfig").await;
    assert_eq!(g2.status, StatusCode::OK);
    assert_eq!(version(&g2), v1);

    let head = k
        .raw(Method::HEAD, "/api/v1/data/app/config", &[], vec![])
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(etag(&head), format!("\"{v1}\""));
    assert_eq!(head.json, serde_json::Value::Null, "HEAD has no body");

    let tag = format!("\"{v1}\"");
    let nm = k
        .raw(
            Method::GET,
            "/api/v1/data/app/config",
            &[("if-none-match", &tag)],
            vec![],
        )
        .await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);

    let r2 = k.put("app%2Fconfig", "null", &[]).await;
    assert_eq!(r2.status, StatusCode::OK, "an update, not a create");
    let v2 = version(&r2);
    assert!(v2 > v1);
    assert_eq!(
        k.get("app/config").await.json["value"],
        serde_json::Value::Null
    );

    // The seed's POST form.
    let p = k
        .post(
            "/api/v1/data",
            serde_json::json!({"key": "seed", "value": [1, "x"]}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.json);
    assert!(version(&p) > v2);
    assert_eq!(
        k.get("seed").await.json["value"],
        serde_json::json!([1, "x"])
    );

    let d = k
        .raw(Method::DELETE, "/api/v1/data/app/config", &[], vec![])
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(version(&d) > version(&p));
    let g = k.get("app/config").await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    assert_eq!(g.json["error"]["code"], "not_found");
    let d = k
        .raw(Method::DELETE, "/api/v1/data/app/config", &[], vec![])
        .await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);

    // Every change is in the audit trail, with the token's name as actor.
    let n: i64 = k
        .state
        .db
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM audit WHERE actor = 'data' AND action LIKE 'data.%'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(n, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_by_prefix_with_cursor_and_keys_only() {
    let k = kv().await;
    for key in ["a/1", "a/2", "a/3", "a/4", "a/5", "ab", "b/1"] {
        assert_eq!(k.put(key, "1", &[]).await.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/data?prefix=a/&limit=2&cursor={c}"),
            None => "/api/v1/data?prefix=a/&limit=2".to_owned(),
        };
        let r = k.raw(Method::GET, &path, &[], vec![]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        assert!(r.json["revision"].as_str().unwrap().parse::<u64>().unwrap() >= 7);
        for it in r.json["items"].as_array().unwrap() {
            assert_eq!(it["value"], 1);
            seen.push(it["key"].as_str().unwrap().to_owned());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["a/1", "a/2", "a/3", "a/4", "a/5"]);
    let r = k
        .raw(Method::GET, "/api/v1/data?keys_only=true", &[], vec![])
        .await;
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    assert!(
        items
            .iter()
            .all(|i| i.get("value").is_none() && i["version"].is_string())
    );
    let r = k
        .raw(Method::GET, "/api/v1/data?limit=0", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = k
        .raw(Method::GET, "/api/v1/data?cursor=zzz", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_values_are_refused_naming_the_rule() {
    let mut cfg = Config::default();
    cfg.kv.max_value_size = ByteSize(100);
    let k = kv_with(cfg).await;
    let long = "k".repeat(1025);
    for (path, rule) in [
        (format!("/api/v1/data/{long}"), "at most 1024 bytes"),
        ("/api/v1/data/a%0Ab".to_owned(), "control character"),
        ("/api/v1/data/a%7Fb".to_owned(), "control character"),
        ("/api/v1/data/a%FFb".to_owned(), "UTF-8"),
    ] {
        let r = k.raw(Method::PUT, &path, &[], b"1".to_vec()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.json);
        assert_eq!(r.json["error"]["code"], "invalid_key", "{path}");
        let msg = r.json["error"]["message"].as_str().unwrap();
        assert!(msg.contains(rule), "{path}: {msg}");
        let g = k.raw(Method::GET, &path, &[], vec![]).await;
        assert_eq!(g.status, StatusCode::BAD_REQUEST, "GET {path}");
    }
    // A 1024-byte key is fine.
    let ok = "k".repeat(1024);
    assert_eq!(k.put(&ok, "1", &[]).await.status, StatusCode::CREATED);
    // No key at all: no such route.
    let r = k
        .raw(Method::PUT, "/api/v1/data/", &[], b"1".to_vec())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = k
        .post("/api/v1/data", serde_json::json!({"key": "", "value": 1}))
        .await;
    assert_eq!(r.json["error"]["code"], "invalid_key");

    for bad in ["", "{", "nul", "{\"a\":1}x", "'x'"] {
        let r = k
            .raw(
                Method::PUT,
                "/api/v1/data/v",
                &[("content-type", "application/json")],
                bad.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(r.json["error"]["code"], "invalid_json", "{bad:?}");
    }
    let big = format!("\"{}\"", "x".repeat(99));
    let r = k.put("v", &big, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json["error"]["code"], "payload_too_large");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kv.max-value-size is 100B"),
        "{}",
        r.json
    );
    let fits = format!("\"{}\"", "x".repeat(98));
    assert_eq!(k.put("v", &fits, &[]).await.status, StatusCode::CREATED);
    // Not JSON at all.
    let r = k
        .raw(
            Method::PUT,
            "/api/v1/data/v",
            &[("content-type", "text/plain")],
            b"1".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = k.put("v?ttl=soon", "1", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["error"]["message"].as_str().unwrap().contains("ttl"));
    // Nothing refused changed anything: only the two good puts are there.
    let r = k.raw(Method::GET, "/api/v1/data", &[], vec![]).await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 2);
    assert_eq!(r.json["revision"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_routes_take_a_full_value_while_others_keep_the_server_limit() {
    let k = kv().await; // kv.max-value-size = server.max-body-size = 1 MiB
    let value = format!("\"{}\"", "x".repeat((1 << 20) - 2));
    assert_eq!(value.len(), 1 << 20);
    let r = k.put("big", &value, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let body = serde_json::json!({"ops": [
        {"op": "put", "key": "big2", "value": serde_json::from_str::<serde_json::Value>(&value).unwrap()},
        {"op": "put", "key": "small", "value": 1}
    ]});
    assert!(body.to_string().len() > 1 << 20);
    let r = k.post("/api/v1/data:batch", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let over = format!("\"{}\"", "x".repeat(1 << 20));
    let r = k.put("big", &over, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kv.max-value-size"),
        "{}",
        r.json
    );
    // Past the route's limit the body is refused from Content-Length alone.
    let huge = vec![b' '; (1 << 20) + (64 << 10) + 1];
    let r = k.raw(Method::PUT, "/api/v1/data/big", &[], huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kv.max-value-size (1MiB) + 64KiB"),
        "{}",
        r.json
    );
    // Other routes keep server.max-body-size.
    let r = k
        .raw(
            Method::POST,
            "/api/v1/tokens",
            &[],
            vec![b' '; (1 << 20) + 10],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max-body-size (1MiB)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_stale_if_match_returns_412_and_create_only_refuses_existing() {
    let k = kv().await;
    let r = k.put("c", "1", &[("if-none-match", "*")]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let v = etag(&r);
    let r = k.put("c", "2", &[("if-none-match", "*")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.json["error"]["code"], "precondition_failed");
    let r = k.put("c", "2", &[("if-match", &v)]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = k.put("c", "3", &[("if-match", &v)]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "stale version");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"c\"")
    );
    let r = k.put("nope", "3", &[("if-match", "*")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let d = k
        .raw(
            Method::DELETE,
            "/api/v1/data/c",
            &[("if-match", &v)],
            vec![],
        )
        .await;
    assert_eq!(d.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(k.get("c").await.json["value"], 2);
}

/// 32 clients × 100 read-modify-write increments with If-Match, retrying on 412, through the
/// router in-process (real database, real group commit; no sockets, to keep it fast).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cas_32_clients_x_100_increments_end_at_3200() {
    let mut cfg = Config::default();
    cfg.rate_limit.enabled = false;
    let k = std::sync::Arc::new(kv_with(cfg).await);
    assert_eq!(k.put("counter", "0", &[]).await.status, StatusCode::CREATED);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut retries = 0u32;
            for _ in 0..100 {
                loop {
                    let g = k.get("counter").await;
                    assert_eq!(g.status, StatusCode::OK);
                    let n = g.json["value"].as_u64().unwrap();
                    let tag = etag(&g);
                    let r = k
                        .put("counter", &(n + 1).to_string(), &[("if-match", &tag)])
                        .await;
                    match r.status {
                        StatusCode::OK => break,
                        StatusCode::PRECONDITION_FAILED => retries += 1,
                        s => panic!("unexpected {s}: {}", r.json),
                    }
                }
            }
            retries
        }));
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    let g = k.get("counter").await;
    assert_eq!(g.json["value"], 3200, "after {retries} retries");
    assert!(
        retries > 0,
        "32 concurrent clients never collided: the test proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_all_or_nothing_and_names_the_failing_key() {
    let k = kv().await;
    let a = k.put("a", "1", &[]).await;
    let va = version(&a);
    k.put("b", "2", &[]).await;
    let r = k
        .post(
            "/api/v1/data:batch",
            serde_json::json!({"ops": [
                {"op": "put", "key": "a", "value": 10, "if_version": va.to_string()},
                {"op": "put", "key": "new", "value": {"x": null}},
                {"op": "delete", "key": "b", "if_version": "1"},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"b\"")
    );
    assert_eq!(k.get("a").await.json["value"], 1, "nothing applied");
    assert_eq!(k.get("new").await.status, StatusCode::NOT_FOUND);

    let r = k
        .post(
            "/api/v1/data:batch",
            serde_json::json!({"ops": [
                {"op": "put", "key": "a", "value": 10, "if_version": va.to_string()},
                {"op": "put", "key": "new", "value": null, "if_version": "0"},
                {"op": "delete", "key": "b"},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let rev = r.json["revision"].as_str().unwrap().to_owned();
    let results = r.json["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|x| x["version"] == rev.as_str()));
    assert_eq!(k.get("a").await.json["value"], 10);
    assert_eq!(k.get("new").await.json["value"], serde_json::Value::Null);
    assert_eq!(k.get("b").await.status, StatusCode::NOT_FOUND);

    for bad in [
        serde_json::json!({"ops": []}),
        serde_json::json!({"ops": [{"op": "put", "key": "x"}]}),
        serde_json::json!({"ops": [{"op": "put", "key": "x", "value": 1}, {"op": "delete", "key": "x"}]}),
        serde_json::json!({"ops": [{"op": "frob", "key": "x"}]}),
        serde_json::json!({"ops": [{"op": "put", "key": "a\u{1}", "value": 1}]}),
    ] {
        let r = k.post("/api/v1/data:batch", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.json);
    }
    let r = k
        .post(
            "/api/v1/data:batch",
            serde_json::json!({"ops": [{"op": "delete", "key": "missing"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_every_change_in_order_and_resumes_from_since() {
    let k = kv().await;
    k.put("w/before", "0", &[]).await;
    let resp = k.watch("&prefix=w/", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    assert_eq!(resp.headers().get("x-accel-buffering").unwrap(), "no");
    let mut ev = Events::new(resp);
    // 50 concurrent writers, plus changes outside the prefix that must not show.
    let k = std::sync::Arc::new(k);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            k.put(&format!("w/{i}"), &i.to_string(), &[]).await;
            k.put(&format!("other/{i}"), "1", &[]).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    k.raw(Method::DELETE, "/api/v1/data/w/7", &[], vec![]).await;
    let got = ev.changes(51).await;
    let ids: Vec<u64> = got.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
    assert!(got[..50].iter().all(|e| e.event == "put"
        && e.data["key"].as_str().unwrap().starts_with("w/")
        && e.data["value"].is_u64()));
    assert_eq!(got[50].event, "delete");
    assert_eq!(got[50].data["key"], "w/7");
    assert_eq!(got[50].data["version"], ids[50].to_string());

    // Resume from the 10th change: exactly the 41 after it, in the same order (since= and
    // Last-Event-ID both).
    let from = ids[9];
    for (q, h) in [
        (format!("&prefix=w/&since={from}"), None),
        ("&prefix=w/".to_owned(), Some(from.to_string())),
    ] {
        let headers: Vec<(&str, &str)> = h.iter().map(|v| ("last-event-id", v.as_str())).collect();
        let mut again = Events::new(k.watch(&q, &headers).await);
        let replay = again.changes(41).await;
        let rids: Vec<u64> = replay.iter().map(|e| e.id.unwrap()).collect();
        assert_eq!(rids, ids[10..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_trimmed_revision_is_410_gone() {
    let mut cfg = Config::default();
    cfg.kv.history_max_changes = 5;
    let k = kv_with(cfg.clone()).await;
    for i in 0..20 {
        k.put(&format!("g{i}"), "1", &[]).await;
    }
    k.state.kv.sweep(&cfg.kv).await.unwrap();
    let resp = k.watch("&since=3", &[]).await;
    assert_eq!(resp.status(), StatusCode::GONE);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(j["error"]["code"], "gone");
    let resp = k.watch("&since=15", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = Events::new(resp).changes(5).await;
    assert_eq!(got[0].id, Some(16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_keys_vanish_from_reads_and_watchers_see_a_delete() {
    let k = kv().await;
    let mut ev = Events::new(k.watch("", &[]).await);
    let r = k.put("t/short", "1", &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = k
        .raw(
            Method::PUT,
            "/api/v1/data/t/short?ttl=300ms",
            &[],
            b"2".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    k.put("t/long", "3", &[]).await;
    assert_eq!(k.get("t/short").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Gone from reads before any sweep.
    assert_eq!(k.get("t/short").await.status, StatusCode::NOT_FOUND);
    let l = k
        .raw(Method::GET, "/api/v1/data?prefix=t/", &[], vec![])
        .await;
    assert_eq!(l.json["items"].as_array().unwrap().len(), 1);
    let s = k.state.kv.sweep(&Config::default().kv).await.unwrap();
    assert_eq!(s.expired, 1);
    let got = ev.changes(4).await;
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e.event.as_str(), e.data["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("put", "t/short"),
            ("put", "t/short"),
            ("put", "t/long"),
            ("delete", "t/short")
        ]
    );
    // A put over an expired, unswept key counts as a create.
    let r = k
        .raw(
            Method::PUT,
            "/api/v1/data/t/x?ttl=100ms",
            &[],
            b"1".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = k.put("t/x", "2", &[("if-none-match", "*")]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_outlives_the_request_timeout() {
    let mut cfg = Config::default();
    cfg.server.request_timeout = HumanDuration(Duration::from_millis(300));
    let k = kv_with(cfg).await;
    let mut ev = Events::new(k.watch("", &[]).await);
    tokio::time::sleep(Duration::from_millis(900)).await;
    k.put("late", "1", &[]).await;
    let got = ev.changes(1).await;
    assert_eq!(got[0].data["key"], "late");
}
