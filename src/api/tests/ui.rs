//! The web UI's routes through the real router: the entry page on every UI route, the
//! hashed assets (gzip and plain, the same bytes), caching headers, ETag revalidation, HEAD,
//! the UI's CSP (and the API's left as it was), 404s for other hashes, unknown paths and
//! traversal, `ui.enabled = false`.

use std::io::Read;

use super::*;
use crate::api::ui;

struct Raw {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn raw(app: &super::super::App, method: Method, path: &str, hs: &[(&str, &str)]) -> Raw {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost:8080");
    for (k, v) in hs {
        b = b.header(*k, *v);
    }
    let resp = super::super::serve(app, b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Raw {
        status,
        headers,
        body,
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ui_route_serves_the_entry_page_without_a_token() {
    let (_d, state) = state().await;
    let app = super::super::router(state);
    let index = std::str::from_utf8(ui::INDEX.plain).unwrap();
    assert!(
        index.contains(&format!("/ui/{}/app/main.js", ui::HASH)),
        "{index}"
    );
    for page in ui::PAGES {
        // With a query string too: page state lives there.
        for path in [page.to_string(), format!("{page}?prefix=a/&x=1")] {
            let r = raw(&app, Method::GET, &path, &[]).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
            assert_eq!(r.header(header::CACHE_CONTROL), "no-cache", "{path}");
            assert_eq!(r.header(header::CONTENT_SECURITY_POLICY), ui::CSP, "{path}");
            assert_eq!(r.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(r.header(header::VARY), "Accept-Encoding");
            assert!(r.headers.get(header::CONTENT_ENCODING).is_none());
            assert_eq!(r.body, ui::INDEX.plain, "{path}");
        }
    }
    // Only those: another top-level path is still the API's JSON 404.
    let r = raw(&app, Method::GET, "/nowhere", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "not_found");
    // The UI's routes are GET (and HEAD) only.
    let r = raw(&app, Method::POST, "/login", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_asset_is_served_plain_and_gzipped_with_the_same_bytes() {
    let (_d, state) = state().await;
    let app = super::super::router(state);
    assert!(ui::find("app/main.js").is_some() && ui::find("app/style.css").is_some());
    // Every /ui/ URL the entry page names is an asset.
    let index = std::str::from_utf8(ui::INDEX.plain).unwrap();
    let named: Vec<&str> = index.split('"').filter(|s| s.starts_with("/ui/")).collect();
    assert!(named.len() >= 2, "{index}");
    for url in named {
        let path = url
            .strip_prefix(&format!("/ui/{}/", ui::HASH))
            .unwrap_or_else(|| panic!("{url} is not under this build's hash"));
        assert!(
            ui::find(path).is_some(),
            "the entry page names {url}, not served"
        );
    }
    for a in ui::ASSETS {
        let url = format!("/ui/{}/{}", ui::HASH, a.path);
        let plain = raw(&app, Method::GET, &url, &[]).await;
        assert_eq!(plain.status, StatusCode::OK, "{url}");
        assert_eq!(plain.body, a.plain, "{url}");
        assert_eq!(plain.header(header::CONTENT_TYPE), a.mime, "{url}");
        assert_eq!(
            plain.header(header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(plain.header(header::VARY), "Accept-Encoding");
        assert_eq!(plain.header(header::CONTENT_SECURITY_POLICY), ui::CSP);
        assert_eq!(
            plain.header(header::CONTENT_LENGTH),
            a.plain.len().to_string()
        );
        assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
        let plain_etag = plain.header(header::ETAG).to_owned();
        assert!(plain_etag.starts_with('"') && plain_etag.ends_with('"'));

        let gz = raw(
            &app,
            Method::GET,
            &url,
            &[("accept-encoding", "gzip, deflate, br")],
        )
        .await;
        assert_eq!(gz.status, StatusCode::OK, "{url}");
        match a.gzip {
            Some(bytes) => {
                assert_eq!(gz.header(header::CONTENT_ENCODING), "gzip", "{url}");
                assert_eq!(gz.body, bytes);
                assert!(gz.body.len() < a.plain.len());
                assert_eq!(gunzip(&gz.body), a.plain, "{url}: gzip bytes differ");
                assert_ne!(gz.header(header::ETAG), plain_etag, "one ETag per form");
            }
            None => {
                assert!(gz.headers.get(header::CONTENT_ENCODING).is_none());
                assert_eq!(gz.body, a.plain);
            }
        }
        // Refused gzip: the plain bytes.
        let no = raw(
            &app,
            Method::GET,
            &url,
            &[("accept-encoding", "gzip;q=0, identity")],
        )
        .await;
        assert!(no.headers.get(header::CONTENT_ENCODING).is_none());
        assert_eq!(no.body, a.plain);
    }
    // The entry page compresses: a gzip form exists at least there.
    let gz = raw(&app, Method::GET, "/", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header(header::CONTENT_ENCODING), "gzip");
    assert_eq!(gunzip(&gz.body), ui::INDEX.plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_etag_gets_304_and_head_gets_the_headers_alone() {
    let (_d, state) = state().await;
    let app = super::super::router(state);
    let url = format!("/ui/{}/app/main.js", ui::HASH);
    for (path, cache) in [
        (url.as_str(), "public, max-age=31536000, immutable"),
        ("/", "no-cache"),
    ] {
        for enc in ["", "gzip"] {
            let first = raw(&app, Method::GET, path, &[("accept-encoding", enc)]).await;
            assert_eq!(first.status, StatusCode::OK);
            let etag = first.header(header::ETAG).to_owned();
            let again = raw(
                &app,
                Method::GET,
                path,
                &[("accept-encoding", enc), ("if-none-match", &etag)],
            )
            .await;
            assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path} {enc}");
            assert!(again.body.is_empty());
            assert_eq!(again.header(header::ETAG), etag);
            assert_eq!(again.header(header::CACHE_CONTROL), cache);
            assert_eq!(again.header(header::VARY), "Accept-Encoding");
            // A weak comparison and a list match too; another tag does not.
            let listed = format!("\"nope\", W/{etag}");
            let weak = raw(&app, Method::GET, path, &[("if-none-match", &listed)]).await;
            assert_eq!(weak.status, StatusCode::NOT_MODIFIED);
            let other = raw(
                &app,
                Method::GET,
                path,
                &[("accept-encoding", enc), ("if-none-match", "\"nope\"")],
            )
            .await;
            assert_eq!(other.status, StatusCode::OK);
            assert_eq!(other.body, first.body);

            let head = raw(&app, Method::HEAD, path, &[("accept-encoding", enc)]).await;
            assert_eq!(head.status, StatusCode::OK, "HEAD {path}");
            assert!(head.body.is_empty());
            assert_eq!(head.header(header::ETAG), etag);
            assert_eq!(
                head.header(header::CONTENT_LENGTH),
                first.body.len().to_string()
            );
            assert_eq!(head.header(header::CONTENT_SECURITY_POLICY), ui::CSP);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hashes_unknown_paths_and_traversal_are_json_404s() {
    let (_d, state) = state().await;
    let app = super::super::router(state);
    let h = ui::HASH;
    let other = if h.starts_with('0') {
        "1111111111111111"
    } else {
        "0000000000000000"
    };
    let cases = [
        format!("/ui/{other}/app/main.js"),
        format!("/ui/{h}/app/nothing.js"),
        format!("/ui/{h}/index.html"),
        format!("/ui/{h}/build.rs"),
        format!("/ui/{h}/../build.rs"),
        format!("/ui/{h}/app/../../build.rs"),
        format!("/ui/{h}/app/%2e%2e/%2e%2e/build.rs"),
        format!("/ui/{h}/app/..%2F..%2Fbuild.rs"),
        format!("/ui/{h}//app/main.js"),
        format!("/ui/{h}/app/main.js/"),
        format!("/ui/{h}/"),
        format!("/ui/{h}"),
        "/ui/".to_owned(),
        "/ui/app/main.js".to_owned(),
    ];
    for path in &cases {
        let r = raw(&app, Method::GET, path, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json()["error"]["code"], "not_found", "{path}");
        assert_eq!(r.header(header::CONTENT_SECURITY_POLICY), API_CSP, "{path}");
    }
    // The wrong-hash answer says where the assets are.
    let r = raw(&app, Method::GET, &cases[0], &[]).await;
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains(&format!("/ui/{h}/")), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_own_csp() {
    let (_d, state) = state().await;
    let app = super::super::router(state);
    for path in ["/api/v1/health", "/api/v1/openapi.json", "/api/v1/session"] {
        let r = raw(&app, Method::GET, path, &[]).await;
        assert_eq!(
            r.header(header::CONTENT_SECURITY_POLICY),
            API_CSP,
            "{path}: {}",
            r.status
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ui_disabled_its_routes_answer_404() {
    let mut cfg = Config::default();
    cfg.ui.enabled = false;
    let (_d, state) = state_with(cfg).await;
    let app = super::super::router(state);
    let asset = format!("/ui/{}/app/main.js", ui::HASH);
    for path in ["/", "/login", "/data", asset.as_str()] {
        let r = raw(&app, Method::GET, path, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json()["error"]["code"], "not_found");
        assert_eq!(r.header(header::CONTENT_SECURITY_POLICY), API_CSP);
    }
    // The API is unaffected.
    let r = raw(&app, Method::GET, "/api/v1/health", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
}
