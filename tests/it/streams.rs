//! Slow and stalled clients against the real daemon: a consumer that stops reading an event
//! stream never holds a job past its deadline and is cut after `server.write-timeout`; idle
//! and stalled HTTP/2 connections are closed; each listener has its own connection budget;
//! data watch streams are capped; a stalled multipart form field is cut.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, free_port, post_exec, request_json, send_exec_stream};
use crate::http::{self, Target};

/// The correctness bound past a deadline the issue names: the daemon answers within it.
const GRACE: Duration = Duration::from_millis(1500);

fn tcp_addr(d: &Daemon) -> SocketAddr {
    match &d.tcp {
        Target::Tcp(a) => *a,
        Target::Unix(_) => unreachable!(),
    }
}

/// A TCP connection whose receive buffer is set small before connecting, so the kernel
/// advertises a small window and a peer that never reads stalls the daemon's writes soon.
fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}")
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr and the
    // option value live on the stack for the duration of each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 4096;
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// Reads until the peer closes (EOF or reset) and returns what came; panics when the peer
/// keeps the connection open past `within`.
fn read_until_closed(s: &mut dyn Read, within: Duration, what: &str) -> Vec<u8> {
    let start = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return raw,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "{what}: still open {:?} after the bound ({} bytes read)",
                    start.elapsed(),
                    raw.len()
                )
            }
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(
            start.elapsed() < within + Duration::from_secs(30),
            "{what}: the daemon keeps sending"
        );
    }
}

#[test]
fn a_client_that_stops_reading_an_event_stream_does_not_hold_the_job_past_its_deadline() {
    let mut d = Daemon::start_config(
        "[rate-limit]\nenabled = false\n[exec]\nmax-concurrent = 1\nmax-queue = 0\n",
    );
    let token = d.admin_token();
    // Far more output than every buffer between the job and the client holds, then a long
    // sleep: the job can only end by its deadline.
    let body = json!({
        "command": "yes | head -c 16777216; sleep 100",
        "timeout_ms": 2000,
        "limits": {"output_bytes": 33554432},
    })
    .to_string();
    let mut s = connect_small_rcvbuf(tcp_addr(&d));
    send_exec_stream(&mut s, &token, &body);
    let auth = format!("Bearer {token}");
    let sent = Instant::now();

    // The execution is recorded as finished once the job has ended (its row exists from its
    // submission); the client has not read a byte.
    let bound = Duration::from_millis(2000) + GRACE;
    let record = loop {
        let page = http::request(
            &d.tcp,
            "GET",
            "/api/v1/executions?limit=1",
            &[("Authorization", &auth)],
            b"",
        )
        .json();
        if let Some(item) = page["items"].get(0)
            && item["state"] == "finished"
        {
            break item.clone();
        }
        assert!(
            sent.elapsed() < bound + Duration::from_secs(3),
            "no execution recorded {:?} after a 2 s deadline: the stalled client holds the job",
            sent.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(record["status"], "timeout", "{record}");
    let wall = record["wall_ms"].as_u64().unwrap();
    assert!(
        wall <= bound.as_millis() as u64,
        "wall_ms {wall} is past the deadline plus the grace"
    );

    // The only exec slot is free again (exec.max-queue = 0 would refuse with 429 otherwise).
    let r = post_exec(&d, &token, &json!({"argv": ["true"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");

    // The consumer fell behind: what it reads now ends with the result, which says how much
    // output the stream dropped.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let raw = read_until_closed(&mut s, Duration::from_secs(10), "the event stream");
    let text = http::parse(&raw).text();
    let result = text
        .split("\n\n")
        .filter_map(|ev| ev.strip_prefix("event: result\ndata: "))
        .last()
        .unwrap_or_else(|| panic!("no result event at the end of {} bytes", text.len()));
    let result: Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["status"], "timeout", "{result}");
    assert!(
        result["dropped_bytes"].as_u64().unwrap_or(0) > 0,
        "the result does not say that output was dropped: {result}"
    );
    d.stop();
}

#[test]
fn a_stalled_watch_stream_is_disconnected_after_the_write_timeout() {
    let mut d =
        Daemon::start_config("[rate-limit]\nenabled = false\n[server]\nwrite-timeout = \"2s\"\n");
    let token = d.admin_token();
    let auth = format!("Bearer {token}");
    let mut s = connect_small_rcvbuf(tcp_addr(&d));
    http::send_head(
        &mut s,
        "GET",
        "/api/v1/data?watch=true",
        &[("Authorization", &auth)],
        None,
    );
    // A stream of changes far larger than the buffers on the way.
    let value = json!({"pad": "x".repeat(60_000)});
    for i in 0..300 {
        let r = request_json(&d, "PUT", &format!("/api/v1/data/k{i}"), &token, &value);
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
    }
    let filled = Instant::now();
    std::thread::sleep(Duration::from_secs(2) + GRACE);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let raw = read_until_closed(&mut s, Duration::from_secs(5), "the stalled watch stream");
    assert!(
        String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"),
        "the watch did not start"
    );
    eprintln!(
        "stalled watch closed {:?} after the writes",
        filled.elapsed()
    );
    // The daemon goes on serving.
    assert_eq!(http::get(&d.tcp, "/api/v1/health").status, 200);
    d.stop();
}

// ---- HTTP/2 (h2c, prior knowledge) by hand: enough framing to see what the daemon does ----

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an N-bit prefix (RFC 7541 5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, bits: u32, mut n: usize) {
    let max = (1usize << bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of literal fields without indexing and without Huffman coding.
fn hpack_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, k.len());
        out.extend_from_slice(k.as_bytes());
        hpack_int(&mut out, 0, 7, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// An HTTP/2 frame: (type, flags, stream, payload).
type H2Frame = (u8, u8, u32, Vec<u8>);

/// Reads one frame; `None` when the peer closed.
fn h2_read_frame(s: &mut TcpStream) -> std::io::Result<Option<H2Frame>> {
    let mut head = [0u8; 9];
    match s.read_exact(&mut head) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    match s.read_exact(&mut payload) {
        Ok(()) => Ok(Some((head[3], head[4], stream, payload))),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

const FRAME_HEADERS: u8 = 1;
const FRAME_SETTINGS: u8 = 4;
const FRAME_PING: u8 = 6;
const FRAME_GOAWAY: u8 = 7;

#[test]
fn an_h2c_connection_that_sent_only_the_preface_is_closed_after_the_header_timeout() {
    let mut d =
        Daemon::start_config("[rate-limit]\nenabled = false\n[server]\nheader-timeout = \"2s\"\n");
    let mut s = TcpStream::connect(tcp_addr(&d)).unwrap();
    s.write_all(H2_PREFACE).unwrap();
    let opened = Instant::now();
    s.set_read_timeout(Some(
        Duration::from_secs(2) + GRACE + Duration::from_secs(3),
    ))
    .unwrap();
    read_until_closed(
        &mut s,
        Duration::from_secs(2),
        "the preface-only h2c connection",
    );
    let took = opened.elapsed();
    assert!(
        took <= Duration::from_secs(2) + GRACE,
        "closed only after {took:?}"
    );

    // A stalled preface (half of it) is closed the same way.
    let mut s = TcpStream::connect(tcp_addr(&d)).unwrap();
    s.write_all(&H2_PREFACE[..10]).unwrap();
    s.set_read_timeout(Some(
        Duration::from_secs(2) + GRACE + Duration::from_secs(3),
    ))
    .unwrap();
    read_until_closed(
        &mut s,
        Duration::from_secs(2),
        "the half-preface connection",
    );

    // Control: an h2c connection carrying a live stream (a data watch) is not idle, however
    // long it runs past the header timeout.
    let token = d.admin_token();
    let auth = format!("Bearer {token}");
    let mut s = TcpStream::connect(tcp_addr(&d)).unwrap();
    s.write_all(H2_PREFACE).unwrap();
    s.write_all(&h2_frame(FRAME_SETTINGS, 0, 0, &[])).unwrap();
    let block = hpack_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", "/api/v1/data?watch=true"),
        ("authorization", &auth),
    ]);
    // END_STREAM | END_HEADERS on stream 1.
    s.write_all(&h2_frame(FRAME_HEADERS, 0x1 | 0x4, 1, &block))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut answered = false;
    while start.elapsed() < Duration::from_secs(2) * 3 {
        match h2_read_frame(&mut s) {
            Ok(None) => panic!(
                "the connection with a live watch stream was closed after {:?}",
                start.elapsed()
            ),
            Ok(Some((FRAME_GOAWAY, _, _, p))) => panic!(
                "GOAWAY on a connection with a live stream after {:?}: {p:?}",
                start.elapsed()
            ),
            Ok(Some((FRAME_SETTINGS, flags, _, _))) if flags & 1 == 0 => {
                s.write_all(&h2_frame(FRAME_SETTINGS, 1, 0, &[])).unwrap();
            }
            Ok(Some((FRAME_PING, flags, _, p))) if flags & 1 == 0 => {
                s.write_all(&h2_frame(FRAME_PING, 1, 0, &p)).unwrap();
            }
            Ok(Some((FRAME_HEADERS, _, 1, _))) => answered = true,
            Ok(Some(_)) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("h2 read: {e}"),
        }
    }
    assert!(answered, "the watch request got no response headers");
    d.stop();
}

/// One `GET` over a Unix socket with a bound on the wait; the status, or `None` when no
/// answer came within it.
fn unix_get(path: &Path, uri: &str, within: Duration) -> Option<u16> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    http::send_head(&mut s, "GET", uri, &[], None);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    (!raw.is_empty()).then(|| http::parse(&raw).status)
}

#[test]
fn an_exhausted_tcp_listener_leaves_the_unix_and_admin_sockets_serving() {
    let port = free_port();
    let sockdir = tempfile::tempdir().unwrap();
    let usock = sockdir.path().join("http.sock");
    let d = Daemon::start_with(Options {
        config: format!(
            "[rate-limit]\nenabled = false\n[server]\nlisten = [\"127.0.0.1:{port}\", \"unix:{}\"]\n\
             max-connections = 2\nadmin-max-connections = 1\nheader-timeout = \"30s\"\n",
            usock.display()
        ),
        activated: false,
        ..Options::default()
    });
    let admin = d.state_dir().join("admin.sock");
    let tcp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Control: the TCP listener serves, then its whole budget is taken by idle connections.
    let status = http::get(&Target::Tcp(tcp), "/api/v1/health").status;
    assert_eq!(status, 200);
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(tcp).unwrap();
            s.write_all(b"GET /api/v1/health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    let mut third = TcpStream::connect(tcp).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    http::send_head(&mut third, "GET", "/api/v1/health", &[], None);
    let mut buf = [0u8; 16];
    assert!(
        matches!(third.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a third TCP connection was served beyond server.max-connections = 2"
    );

    assert_eq!(
        unix_get(&usock, "/api/v1/health", Duration::from_secs(5)),
        Some(200),
        "the unix listener does not serve while the TCP listener's budget is exhausted"
    );
    assert_eq!(
        unix_get(&admin, "/api/v1/health", Duration::from_secs(5)),
        Some(200),
        "the admin socket does not serve while the TCP listener's budget is exhausted"
    );

    // The admin socket's own budget (1) is taken by an idle connection: root still gets in.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut idle_admin = UnixStream::connect(&admin).unwrap();
        idle_admin
            .write_all(b"GET /api/v1/health HTTP/1.1\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            unix_get(&admin, "/api/v1/health", Duration::from_secs(5)),
            Some(200),
            "root found no room on the admin socket"
        );
        drop(idle_admin);
    } else {
        eprintln!("skipped the admin socket's root reserve: needs root (CI runs as root)");
    }

    // Releasing a TCP connection lets the waiting one in.
    held.pop();
    drop(held);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    third.read_to_end(&mut raw).unwrap();
    assert_eq!(http::parse(&raw).status, 200);
}

fn watch_status(d: &Daemon, token: &str) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(tcp_addr(d)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = format!("Bearer {token}");
    http::send_head(
        &mut s,
        "GET",
        "/api/v1/data?watch=true",
        &[("Authorization", &auth)],
        None,
    );
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a response head");
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status != 200 {
        // The error body (Connection: close) follows.
        let _ = s.read_to_end(&mut raw);
    }
    (status, String::from_utf8_lossy(&raw).into_owned(), s)
}

#[test]
fn data_watch_streams_are_capped_per_token_and_in_total() {
    let mut d = Daemon::start_config(
        "[rate-limit]\nenabled = false\n[kv]\nmax-watches-per-token = 2\nmax-watches = 3\n",
    );
    let admin = d.admin_token();
    let r = request_json(
        &d,
        "POST",
        "/api/v1/tokens",
        &admin,
        &json!({"name": "watcher", "scopes": ["read", "write"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let other = r.json()["token"].as_str().unwrap().to_owned();

    let (s1, _, a1) = watch_status(&d, &admin);
    let (s2, _, _a2) = watch_status(&d, &admin);
    assert_eq!((s1, s2), (200, 200));
    let (s3, body, _) = watch_status(&d, &admin);
    assert_eq!(s3, 429, "a third watch of one token: {body}");
    assert!(body.contains("kv.max-watches-per-token"), "{body}");

    let (s4, _, _b1) = watch_status(&d, &other);
    assert_eq!(s4, 200, "another token has its own budget");
    let (s5, body, _) = watch_status(&d, &other);
    assert_eq!(s5, 503, "a fourth watch in all: {body}");
    assert!(body.contains("kv.max-watches"), "{body}");

    // A closed stream gives its place back (the daemon notices at its next write).
    drop(a1);
    let start = Instant::now();
    loop {
        let r = request_json(&d, "PUT", "/api/v1/data/poke", &admin, &json!(1));
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
        let (s, body, _keep) = watch_status(&d, &admin);
        if s == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the closed watch never gave its place back: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.stop();
}

#[test]
fn a_stalled_non_file_form_field_is_cut_after_the_upload_idle_timeout() {
    let mut d = Daemon::start_config(
        "[rate-limit]\nenabled = false\n[files]\nupload-idle-timeout = \"2s\"\n",
    );
    let auth = format!("Bearer {}", d.admin_token());
    let mut s = http::connect(&d.tcp);
    let opening = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello, and then";
    http::send_head(
        &mut *s,
        "POST",
        "/api/v1/files",
        &[
            ("Authorization", &auth),
            ("Content-Type", "multipart/form-data; boundary=XyZ"),
        ],
        Some(100_000),
    );
    s.write_all(opening.as_bytes()).unwrap();
    let sent = Instant::now();
    let r = http::read_response(&mut *s);
    let took = sent.elapsed();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("files.upload-idle-timeout"),
        "{}",
        r.text()
    );
    assert!(
        took <= Duration::from_secs(2) + GRACE,
        "answered only after {took:?}"
    );
    // Control: nothing was stored, and a complete form with the same field is accepted.
    let list = http::request(
        &d.tcp,
        "GET",
        "/api/v1/files",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(0));
    let form = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nA\r\n--XyZ--\r\n";
    let r = http::request(
        &d.tcp,
        "POST",
        "/api/v1/files",
        &[
            ("Authorization", &auth),
            ("Content-Type", "multipart/form-data; boundary=XyZ"),
        ],
        form.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    d.stop();
}
