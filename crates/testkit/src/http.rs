//! HTTP in tests, on 127.0.0.1 only: a client for servers the tests start
//! ([`get`], [`wait_for_200`]) and the plumbing of small mock servers
//! ([`serve`], [`Request`], [`respond`]).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole response (status line, headers, body) to `GET path` on
/// 127.0.0.1:`port`; `None` when nothing accepts the connection or it breaks
/// before the response ends. A connection closed without a byte gives `Some("")`.
pub fn get(port: u16, path: &str) -> Option<String> {
    let addr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The response at `port`, once something answers 200 there; panics after `within`.
pub fn wait_for_200(port: u16, path: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = get(port, path) {
            if r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200") {
                return r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nothing answered 200 on 127.0.0.1:{port}{path} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A request as a mock server sees it: the path and the headers (names in
/// lower case). Bodies are not read.
pub struct Request {
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl Request {
    fn read(s: &TcpStream) -> Option<Request> {
        let mut r = BufReader::new(s.try_clone().ok()?);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.trim().split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        Some(Request { path, headers })
    }

    /// The header `name` (in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A listener on a free port of 127.0.0.1 and its `host:port`.
pub fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// Serves every connection to `listener` on a thread of its own, for the
/// life of the test process: `handle` gets the shared state, the request and
/// the connection to answer on (with [`respond`], or by hand).
pub fn serve<S: Send + Sync + 'static>(
    listener: TcpListener,
    state: Arc<S>,
    handle: fn(&S, Request, &mut TcpStream),
) {
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || {
                if let Some(req) = Request::read(&conn) {
                    handle(&state, req, &mut conn);
                }
            });
        }
    });
}

/// Writes a whole response (one request per connection: `Connection: close`).
pub fn respond(s: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = s.write_all(out.as_bytes());
    let _ = s.write_all(body);
}
