//! The web UI, embedded in the binary by the build script (`src/api/ui/build.rs`): the entry
//! page on the UI's routes (`/`, `/login`, `/data`…, `Cache-Control: no-cache`) and the
//! assets under `/ui/H/<path>` (H: the hash of all of them, so their URLs change whenever one
//! does and they can be cached for a year). Each asset is stored plain and, when that is
//! smaller, gzip-compressed; a client that accepts gzip gets the compressed bytes. The routes
//! are public (the app is; the API behind it is not) and answer 404 when `ui.enabled` is off.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::api::state::AppState;

/// One embedded file.
pub struct Asset {
    /// Its path below `src/api/ui/` (`app/main.js`).
    pub path: &'static str,
    pub mime: &'static str,
    /// A strong ETag from its content (quoted); the gzip form adds `-gz`.
    pub etag: &'static str,
    pub plain: &'static [u8],
    /// The gzip-compressed bytes, when smaller than the plain ones.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The UI's pages: each answers with the entry page, the app routes on the client.
pub const PAGES: &[&str] = &[
    "/",
    "/login",
    "/data",
    "/files",
    "/programs",
    "/console",
    "/jobs",
    "/terminal",
    "/tunnels",
    "/admin",
];

/// The Content-Security-Policy of the UI's responses (the API keeps its own, stricter one).
/// The inline style allowances are xterm.js 6's: it inserts a `<style>` element and sets
/// style attributes; scripts only from this origin, no inline script, no eval.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    style-src-elem 'self' 'unsafe-inline'; style-src-attr 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The asset at `path` (below `src/api/ui/`), if embedded.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .and_then(|i| ASSETS.get(i))
}

/// `GET /` and the other pages: the entry page.
pub async fn page(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    if !state.live.get().ui.enabled {
        return disabled(&uri);
    }
    respond(&INDEX, &headers, "no-cache")
}

/// `GET /ui/{hash}/{*path}`: an asset, when `hash` is this build's.
pub async fn asset(
    State(state): State<AppState>,
    uri: Uri,
    Path((hash, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !state.live.get().ui.enabled {
        return disabled(&uri);
    }
    if hash != HASH {
        return super::error::ApiError::not_found(format!(
            "no UI asset {}: this server's UI assets are under /ui/{HASH}/",
            uri.path()
        ))
        .into_response();
    }
    match find(&path) {
        Some(a) => respond(a, &headers, IMMUTABLE),
        None => {
            super::error::ApiError::not_found(format!("no UI asset {}", uri.path())).into_response()
        }
    }
}

/// With the UI off its routes answer as a path without a route does.
fn disabled(uri: &Uri) -> Response {
    super::not_found(&axum::http::Method::GET, uri.path()).into_response()
}

/// The asset in the form the client accepts, or 304 when it has it already.
fn respond(a: &'static Asset, req: &HeaderMap, cache: &'static str) -> Response {
    let gzip = a.gzip.filter(|_| accepts_gzip(req));
    let etag: std::borrow::Cow<'static, str> = match gzip {
        Some(_) => format!("{}-gz\"", a.etag.trim_end_matches('"')).into(),
        None => a.etag.into(),
    };
    let fresh = if_none_match(req, a.etag);
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = gzip.unwrap_or(a.plain);
        let mut r = (StatusCode::OK, body).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if gzip.is_some() {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}

/// Whether `If-None-Match` names this asset: its ETag in either form (plain or gzip), weak
/// or strong, or `*`.
fn if_none_match(req: &HeaderMap, etag: &str) -> bool {
    let base = etag.trim_matches('"');
    req.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| {
            if t == "*" {
                return true;
            }
            let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
            t == base || t.strip_suffix("-gz") == Some(base)
        })
}

/// Whether `Accept-Encoding` allows gzip (`gzip`, `x-gzip` or `*`, not with `q=0`; an
/// explicit `gzip;q=0` wins over `*`).
pub fn accepts_gzip(req: &HeaderMap) -> bool {
    let mut star = false;
    for item in req
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        match name.as_str() {
            "gzip" | "x-gzip" => return !q_zero,
            "*" => star = !q_zero,
            _ => {}
        }
    }
    star
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        let yes = [
            "gzip",
            "gzip, deflate, br",
            "br;q=1.0, gzip;q=0.8",
            "*",
            "x-gzip",
            "GZIP",
        ];
        for v in yes {
            assert!(accepts_gzip(&headers(&[("accept-encoding", v)])), "{v}");
        }
        let no = [
            "",
            "identity",
            "br",
            "gzip;q=0",
            "*, gzip;q=0",
            "gzip; q=0.0",
        ];
        for v in no {
            assert!(!accepts_gzip(&headers(&[("accept-encoding", v)])), "{v}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_assets_are_sorted_and_the_index_points_at_them() {
        assert_eq!(HASH.len(), 16);
        assert!(HASH.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(ASSETS.windows(2).all(|w| w[0].path < w[1].path));
        let index = std::str::from_utf8(INDEX.plain).unwrap();
        assert!(!index.contains("@ASSETS@"), "{index}");
        assert!(
            index.contains(&format!("/ui/{HASH}/app/main.js")),
            "{index}"
        );
        let main = find("app/main.js").unwrap();
        assert_eq!(main.mime, "text/javascript; charset=utf-8");
        assert!(find("index.html").is_none() && find("app/nothing.js").is_none());
    }

    #[test]
    fn if_none_match_takes_either_form_of_the_etag() {
        let etag = "\"abc\"";
        for v in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc-gz\"", "*"] {
            assert!(
                if_none_match(&headers(&[("if-none-match", v)]), etag),
                "{v}"
            );
        }
        for v in ["\"abd\"", "\"abc-br\"", ""] {
            assert!(
                !if_none_match(&headers(&[("if-none-match", v)]), etag),
                "{v}"
            );
        }
    }
}
