//! A localtunnel server for the tests, speaking the protocol the real `lt` client (npm
//! `localtunnel` 2.0.2) expects, read from the sources:
//!
//! - The client (localtunnel/localtunnel at commit 1f47bd6ae7a6cb71974b50fe9188b3884aff5789,
//!   `lib/Tunnel.js`) asks `GET {host}/?new`, or `GET {host}/{subdomain}`, and reads the JSON
//!   answer's `id`, `url`, `port`, `max_conn_count` (and `ip`, `cached_url` when present).
//!   `lib/TunnelCluster.js` then opens `max_conn_count` TCP connections to `ip` (else the
//!   host's name) at `port`, pipes each to the local server (rewriting the first `Host` header
//!   to `--local-host`, `lib/HeaderHostTransformer.js`), and opens a new one whenever one
//!   closes.
//! - The server (localtunnel/server at commit 78c06f8fc43ce0eacea2aeb88f2d1d63afaf4e19):
//!   `server.js` answers `/?new` with a random id and `/{id}` (checked against
//!   `^(?:[a-z0-9][a-z0-9\-]{4,63}[a-z0-9]|[a-z0-9]{4,63})$`, else 403 `{"message"}`) with
//!   `{id, port, max_conn_count, url}`, the url `schema://id.host`; `lib/ClientManager.js`
//!   gives a taken id a random one instead; `lib/TunnelAgent.js` listens on a free TCP port per
//!   client and hands its sockets out one request at a time; `lib/Client.js` forwards a public
//!   request, chosen by the first label of its `Host`, over one of them.
//!
//! Here the public side has a port of its own ([`LtServer::public_addr`]) and tunnel URLs are
//! `http://ID.tunnel.test:PUBLIC_PORT`; a public connection is piped raw (HTTP/1.1 bytes both
//! ways) through one client socket, which is then done with (the client opens another).
//!
//! The server runs on a runtime of its own, so the (synchronous) integration tests can use
//! it; dropping it stops everything.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The domain of the tunnels' URLs (RFC 2606's reserved `.test`).
pub const DOMAIN: &str = "tunnel.test";
/// The sockets each client is told to open (the server's default `--max-sockets`).
const MAX_CONN: usize = 10;
/// How long a public request waits for a client socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Client {
    /// Connected sockets not yet used for a request.
    idle: Mutex<VecDeque<TcpStream>>,
    arrived: Notify,
    /// Sockets the client has opened so far.
    opened: Mutex<usize>,
}

#[derive(Default)]
struct State {
    clients: Mutex<HashMap<String, Arc<Client>>>,
    public_port: Mutex<u16>,
}

pub struct LtServer {
    runtime: Option<tokio::runtime::Runtime>,
    api: SocketAddr,
    public: SocketAddr,
    state: Arc<State>,
}

impl LtServer {
    /// Binds the API and public ports on loopback and serves them.
    pub fn start() -> LtServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(State::default());
        let (api, public) = runtime.block_on(async {
            let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addrs = (api.local_addr().unwrap(), public.local_addr().unwrap());
            *state.public_port.lock().unwrap() = addrs.1.port();
            tokio::spawn(accept_loop(api, state.clone(), serve_api));
            tokio::spawn(accept_loop(public, state.clone(), serve_public));
            addrs
        });
        LtServer {
            runtime: Some(runtime),
            api,
            public,
            state,
        }
    }

    /// What `lt --host` takes: `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Where the public sends requests for the tunnels (Host `ID.tunnel.test`).
    pub fn public_addr(&self) -> SocketAddr {
        self.public
    }

    /// A tunnel's URL, as the API answers it.
    pub fn url_for(&self, id: &str) -> String {
        format!("http://{id}.{DOMAIN}:{}", self.public.port())
    }

    /// Waits until a client has asked for a tunnel and opened a socket to it; its id.
    pub fn wait_client(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .state
                .clients
                .lock()
                .unwrap()
                .iter()
                .find(|(_, c)| *c.opened.lock().unwrap() > 0)
                .map(|(id, _)| id.clone());
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ids of the tunnels asked for so far.
    pub fn tunnels(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.state.clients.lock().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// `GET path` through the public port with `Host: host` (`Connection: close`): the status
    /// and body.
    pub fn request(&self, path: &str, host: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = std::net::TcpStream::connect(self.public_addr())?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lt-server-test\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        parse_response(&raw).ok_or_else(|| {
            std::io::Error::other(format!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(&raw)
            ))
        })
    }
}

impl Drop for LtServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Status and body of a whole response (read until the connection closed); a
/// `Content-Length` body is cut to its length.
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = raw[end + 4..].to_vec();
    let length = head.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if let Some(n) = length {
        body.truncate(n);
    }
    Some((status, body))
}

async fn accept_loop<F, Fut>(listener: TcpListener, state: Arc<State>, serve: F)
where
    F: Fn(TcpStream, Arc<State>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream, state.clone()));
    }
}

/// Reads a request's head (through the blank line): the head and any bytes after it.
async fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end + 4].to_vec()).ok()?;
            return Some((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn respond(stream: &mut TcpStream, status: &str, body: &serde_json::Value) {
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// server.js's subdomain rule.
fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let plain = (4..=63).contains(&b.len()) && b.iter().all(alnum);
    let hyphened = (6..=65).contains(&b.len())
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-');
    plain || hyphened
}

fn random_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    let letters: String = bytes.iter().map(|b| (b'a' + b % 26) as char).collect();
    format!("test-{letters}")
}

/// The API port: `GET /?new` and `GET /{id}` make a tunnel.
async fn serve_api(mut stream: TcpStream, state: Arc<State>) {
    let Some((head, _)) = read_head(&mut stream).await else {
        return;
    };
    let target = head.split(' ').nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut id = if path == "/"
        && query
            .split('&')
            .any(|q| q == "new" || q.starts_with("new="))
    {
        random_id()
    } else if let Some(wanted) = path
        .strip_prefix('/')
        .filter(|p| !p.is_empty() && !p.contains('/'))
    {
        if !valid_id(wanted) {
            let message = "Invalid subdomain. Subdomains must be lowercase and between 4 and 63 \
                           alphanumeric characters.";
            respond(
                &mut stream,
                "403 Forbidden",
                &serde_json::json!({ "message": message }),
            )
            .await;
            return;
        }
        wanted.to_string()
    } else {
        respond(
            &mut stream,
            "404 Not Found",
            &serde_json::json!({ "message": "not found" }),
        )
        .await;
        return;
    };
    if state.clients.lock().unwrap().contains_key(&id) {
        id = random_id();
    }
    let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
        respond(
            &mut stream,
            "500 Internal Server Error",
            &serde_json::json!({}),
        )
        .await;
        return;
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let client = Arc::new(Client::default());
    state
        .clients
        .lock()
        .unwrap()
        .insert(id.clone(), client.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            *client.opened.lock().unwrap() += 1;
            client.idle.lock().unwrap().push_back(socket);
            client.arrived.notify_one();
        }
    });
    let public_port = *state.public_port.lock().unwrap();
    let url = format!("http://{id}.{DOMAIN}:{public_port}");
    let body = serde_json::json!({
        "id": id,
        "port": port,
        "max_conn_count": MAX_CONN,
        "url": url,
    });
    respond(&mut stream, "200 OK", &body).await;
}

/// The public port: the request goes, raw, through one of the Host's tunnel's sockets.
async fn serve_public(mut stream: TcpStream, state: Arc<State>) {
    let Some((head, rest)) = read_head(&mut stream).await else {
        return;
    };
    let id = header(&head, "host")
        .and_then(|h| h.split('.').next())
        .unwrap_or("")
        .to_string();
    let client = state.clients.lock().unwrap().get(&id).cloned();
    let Some(client) = client else {
        let _ = stream
            .write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\n404",
            )
            .await;
        return;
    };
    let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
    let socket = loop {
        let arrived = client.arrived.notified();
        if let Some(s) = client.idle.lock().unwrap().pop_front() {
            break Some(s);
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            break None;
        }
    };
    let Some(mut socket) = socket else {
        let _ = stream
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 9\r\nConnection: close\r\n\r\nno client",
            )
            .await;
        return;
    };
    if socket.write_all(head.as_bytes()).await.is_err() || socket.write_all(&rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut socket).await;
}

/// A local HTTP server standing for the daemon: answers every request with 200 and
/// `hello PATH`, and records each request's head.
struct Responder {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Responder {
    fn start() -> Responder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    seen.lock().unwrap().push(head);
                    let body = format!("hello {path}");
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Responder { addr, heads }
    }
}

/// Kills the child (by its pid, through `Child::kill`) when the test ends, pass or fail.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_api_answers_like_localtunnels_server() {
    let server = LtServer::start();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(server.api).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.api
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let (status, body) = parse_response(&raw).unwrap();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        )
    };
    let (status, new) = get("/?new");
    assert_eq!(status, 200);
    let id = new["id"].as_str().unwrap().to_string();
    assert!(valid_id(&id), "{id}");
    assert_eq!(new["url"], server.url_for(&id));
    assert_eq!(new["max_conn_count"], MAX_CONN);
    assert!(new["port"].as_u64().unwrap() > 0);

    let (status, named) = get("/my-subdomain");
    assert_eq!(status, 200);
    assert_eq!(named["id"], "my-subdomain");
    // Taken: a random one instead (ClientManager.newClient).
    let (_, again) = get("/my-subdomain");
    assert_ne!(again["id"], "my-subdomain");
    let (status, bad) = get("/No");
    assert_eq!(status, 403);
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("Invalid subdomain")
    );

    // A Host naming no tunnel is 404 (server.js).
    assert_eq!(
        server.request("/", &format!("nobody.{DOMAIN}")).unwrap().0,
        404
    );
    assert_eq!(server.tunnels().len(), 3);
}

#[test]
fn the_real_lt_client_forwards_through_it() {
    let Some(lt) = crate::harness::find_on_path("lt") else {
        println!(
            "skipped: `lt` is not on the PATH (npm install -g localtunnel@2.0.2 provides it; \
             .ci/run installs it)"
        );
        return;
    };
    let server = LtServer::start();
    let responder = Responder::start();
    let mut child = Reaped(
        std::process::Command::new(&lt)
            .args(["--port", &responder.addr.port().to_string()])
            .args(["--host", &server.api_url()])
            .args(["--local-host", "127.0.0.1"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::temp_dir())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // lt.js prints its URL once the server has answered (stdout, one line).
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| {
            let _ = child.0.kill();
            let mut err = String::new();
            let _ = child.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("lt printed nothing ({e}); stderr: {err}")
        });
    assert!(line.starts_with("your url is: "), "{line}");
    let id = server
        .wait_client(Duration::from_secs(30))
        .expect("lt opened no tunnel socket");
    let url = server.url_for(&id);
    assert_eq!(line, format!("your url is: {url}"));
    // The provider's discovery reads the same line.
    let cfg = localhostd::config::TunnelsConfig::default();
    let found = localhostd::ops::tunnels::provider::url_from_line(
        localhostd::ops::tunnels::provider::Provider::Localtunnel,
        &line,
        &cfg,
        &Default::default(),
    );
    assert_eq!(found.as_deref(), Some(url.as_str()));

    // Requests through the public port reach the responder, one after another (each uses a
    // client socket; lt opens a new one when one closes).
    for i in 0..3 {
        let path = format!("/health?i={i}");
        let (status, body) = server.request(&path, &format!("{id}.{DOMAIN}")).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, format!("hello {path}").as_bytes());
    }
    let heads = responder.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    // `--local-host` makes lt rewrite the Host header to it (HeaderHostTransformer.js): what
    // the daemon's public listener sees from a localtunnel client.
    for head in &heads {
        assert!(head.contains("\r\nHost: 127.0.0.1\r\n"), "{head}");
        assert!(head.contains("User-Agent: lt-server-test"), "{head}");
    }
    // Another host's tunnel is not this one.
    assert_eq!(
        server.request("/", &format!("other.{DOMAIN}")).unwrap().0,
        404
    );
    assert!(child.0.try_wait().unwrap().is_none(), "lt exited");
}
