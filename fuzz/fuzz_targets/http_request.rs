//! Fuzzes the HTTP request path: each input is written raw to a fresh connection to a real
//! Canopy listener, which is half-closed once the proxy has gone quiet. What must hold: no
//! panic anywhere in the process, the proxy ends the connection within a deadline, and
//! afterwards it still serves a good request with the origin's own content (so no input
//! poisoned the cache).
//!
//! The proxy runs in this process, started once, on a temporary data dir. Every request goes
//! through one parent on loopback (`never_direct`), a small origin that answers any URL, so
//! whatever host an input names, nothing leaves the machine.
#![no_main]

use std::convert::Infallible;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use canopy_config::config::Config;
use canopy_config::versions::Db;
use canopy_proxy::control::ControlHandler;
use canopy_proxy::proxy::Proxy;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;

/// Longer than any timeout the proxy is configured with below, so only a real hang trips it.
const DEADLINE: Duration = Duration::from_secs(15);

/// The URL checked after every input, and the body the origin gives it.
const CANARY_REQUEST: &[u8] = b"GET http://canary.fuzz.test/canary HTTP/1.1\r\n\
    Host: canary.fuzz.test\r\nConnection: close\r\n\r\n";
const CANARY_BODY: &str = "canary 5f1c9a: the origin's own content";

fuzz_target!(|input: &[u8]| {
    let proxy = *proxy();
    send_raw(proxy, input);
    let reply = read_to_end(connect(proxy), CANARY_REQUEST, Vec::new());
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains(CANARY_BODY),
        "after this input a good request got {text:?}"
    );
});

/// How long the proxy has to start answering, and then to go on, before the client
/// half-closes. A half-close cancels a request still in flight (the client has gone), so
/// the wait lets the whole request path run for inputs that are good requests.
const FIRST_ANSWER: Duration = Duration::from_millis(100);
const QUIET: Duration = Duration::from_millis(20);

/// Writes `input`, reads the answers until the proxy goes quiet, half-closes, and reads on
/// until the proxy closes. Panics when it holds the connection past the deadline.
fn send_raw(proxy: SocketAddr, input: &[u8]) {
    let started = Instant::now();
    let mut stream = connect(proxy);
    // The proxy may close before reading everything: that is an answer too.
    if stream.write_all(input).is_err() {
        return;
    }
    let mut reply = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let mut wait = FIRST_ANSWER;
    loop {
        stream.set_read_timeout(Some(wait)).expect("read timeout");
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => return,
        }
        wait = QUIET;
        assert!(
            started.elapsed() < DEADLINE,
            "the proxy kept sending for {DEADLINE:?}"
        );
    }
    let _ = stream.shutdown(Shutdown::Write);
    read_to_end(stream, b"", reply);
}

fn connect(proxy: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(proxy).expect("the proxy accepts connections");
    stream
        .set_write_timeout(Some(DEADLINE))
        .expect("write timeout");
    stream
}

/// Writes `request` and reads until the proxy closes; panics past the deadline.
fn read_to_end(mut stream: TcpStream, request: &[u8], mut reply: Vec<u8>) -> Vec<u8> {
    let started = Instant::now();
    if stream.write_all(request).is_err() {
        return reply;
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return reply,
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return reply,
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the proxy held the connection for {DEADLINE:?}; it sent {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
}

/// The proxy's listening address; the first call starts the origin and the proxy.
fn proxy() -> &'static SocketAddr {
    static PROXY: OnceLock<SocketAddr> = OnceLock::new();
    PROXY.get_or_init(|| {
        // libFuzzer's main, not Rust's, starts this process, so SIGPIPE still kills it as
        // it would a C program; canopy-proxy, started by Rust, ignores it (writev to a
        // client that has gone is an error, not a signal).
        // SAFETY: sets a disposition, installs no handler.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fuzz-harness".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("the harness runtime");
                runtime.block_on(async move {
                    let origin = start_origin().await;
                    let proxy = start_proxy(origin).await;
                    let addr = proxy.status().await.http_listen;
                    ready
                        .send(addr.parse().expect("the proxy's address"))
                        .expect("the fuzz thread waits");
                    // The proxy lives as long as the process.
                    std::future::pending::<()>().await;
                });
            })
            .expect("the harness thread");
        started.recv().expect("the proxy starts")
    })
}

async fn start_proxy(origin: SocketAddr) -> std::sync::Arc<Proxy> {
    let data_dir = tempfile::tempdir().expect("a data dir").keep();
    let db = Db::open(&data_dir.join("canopy.db"))
        .await
        .expect("the config database");
    let mut config = Config::default();
    let settings = [
        ("bind_address", "127.0.0.1".to_owned()),
        ("http_port", free_port().to_string()),
        ("access_log", String::new()),
        ("cache_mem", "4M".to_owned()),
        ("max_object_size", "256K".to_owned()),
        ("parents", format!("{origin};")),
        ("never_direct", "on".to_owned()),
        ("connect_timeout_ms", "1000".to_owned()),
        ("read_timeout_ms", "3000".to_owned()),
    ];
    config
        .set_all(settings.iter().map(|(key, value)| (*key, value.as_str())))
        .expect("the harness settings are valid");
    db.save(&config, "fuzz", "fuzz harness", None)
        .await
        .expect("the harness config is valid");
    Proxy::start(db, data_dir).await.expect("the proxy starts")
}

/// A port free on loopback right now, for the proxy's listener (which must name one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The parent every request goes to: answers any URL with content of its own, cacheable.
async fn start_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("origin bind");
    let addr = listener.local_addr().expect("origin address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    addr
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let received = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let (status, body) = if parts.method == Method::CONNECT {
        (StatusCode::FORBIDDEN, "no tunnels here\n".to_owned())
    } else if parts.uri.path() == "/canary" {
        (StatusCode::OK, CANARY_BODY.to_owned())
    } else {
        let text = format!(
            "{} {} ({received} bytes of body)\n",
            parts.method, parts.uri
        );
        (StatusCode::OK, text)
    };
    let response = Response::builder()
        .status(status)
        .header("cache-control", "max-age=3600")
        .body(Full::new(Bytes::from(body)))
        .expect("a well-formed response");
    Ok(response)
}
