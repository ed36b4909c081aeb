//! The request id: taken from `X-Request-Id` when it is sane, otherwise generated; available
//! to any code running for the request through a task-local, echoed in the response.

use axum::http::HeaderMap;

tokio::task_local! {
    static REQUEST_ID: String;
}

pub const HEADER: &str = "x-request-id";

/// The id of the request being served by this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The client's id if it is 1–128 characters of `[A-Za-z0-9._:-]` (safe for logs and
/// headers), else a new random one.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map(str::to_owned)
        .unwrap_or_else(new_id)
}

/// A new id: 32 hex digits, a random half fixed at start and a counter (unique within this
/// run, and across runs but for chance). No system call per request, unlike a random UUID,
/// and ids of one run sort in arrival order.
fn new_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUN: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run = *RUN.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without the kernel's randomness the time of start keeps runs apart.
        if getrandom::fill(&mut b).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            b = (now.as_nanos() as u64).to_le_bytes();
        }
        u64::from_le_bytes(b)
    });
    // By hand: every request makes one, and `format!` with two `{:016x}` goes through the
    // formatting machinery for what is a fixed-width hex encoding.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for word in [run, NEXT.fetch_add(1, Ordering::Relaxed)] {
        for shift in (0..16).rev() {
            out.push(char::from(HEX[((word >> (shift * 4)) & 0xf) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_hostile_ones_replaced() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, "abc-123_x.y:z".parse().unwrap());
        assert_eq!(from_headers(&h), "abc-123_x.y:z");
        h.insert(HEADER, "bad id\twith spaces".parse().unwrap());
        let id = from_headers(&h);
        assert_eq!(id.len(), 32);
        h.insert(HEADER, "a".repeat(129).parse().unwrap());
        assert_eq!(from_headers(&h).len(), 32);
        assert_eq!(from_headers(&HeaderMap::new()).len(), 32);
        assert_ne!(
            from_headers(&HeaderMap::new()),
            from_headers(&HeaderMap::new())
        );
    }

    #[test]
    fn new_ids_are_the_run_then_a_counter_in_hex() {
        let (a, b) = (new_id(), new_id());
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(a[..16], b[..16], "same run");
        let n = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(n(&b) > n(&a), "{a} then {b}");
    }
}
