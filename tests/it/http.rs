//! A minimal HTTP/1.1 client over TCP or Unix sockets (one request per connection), enough
//! to see exactly what the daemon sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

pub fn connect(target: &Target) -> Box<dyn Stream> {
    match target {
        Target::Tcp(a) => {
            let s = TcpStream::connect(a).unwrap_or_else(|e| panic!("connect {a}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            Box::new(s)
        }
        Target::Unix(p) => {
            let s =
                UnixStream::connect(p).unwrap_or_else(|e| panic!("connect {}: {e}", p.display()));
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            Box::new(s)
        }
    }
}

/// Sends one request (with `Connection: close`) and reads the whole response.
pub fn request(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = connect(target);
    send_head(&mut *s, method, path, headers, Some(body.len()));
    // A server may answer (e.g. 405, 413) without reading the body and close: then this
    // write fails with EPIPE, and the answer is still there to read.
    let _ = s.write_all(body);
    read_response(&mut *s)
}

pub fn get(target: &Target, path: &str) -> Response {
    request(target, "GET", path, &[], b"")
}

pub fn send_head(
    s: &mut dyn Stream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    len: Option<usize>,
) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(len) = len
        && (len > 0 || method != "GET")
    {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
}

pub fn read_response(s: &mut dyn Stream) -> Response {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| {
        panic!(
            "reading response: {e} (got {:?})",
            String::from_utf8_lossy(&raw)
        )
    });
    parse(&raw)
}

pub fn parse(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..nl])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        data = &data[nl + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
