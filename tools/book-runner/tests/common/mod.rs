//! What the runner's tests share: a runner serving on an ephemeral loopback
//! port, and an HTTP client (hyper's) that can send any header, a forged
//! `Host` included.

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::sync::Arc;

use book_runner::catalog::Catalog;
use book_runner::queue::Queue;
use book_runner::run::{RunLimits, Runner};
use book_runner::server::{self, Access};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

pub const BOOK_ORIGIN: &str = "http://localhost:3000";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A runner for the tests, building in its own directory so that it never
/// touches the slots of a runner the reader started.
pub fn runner(slots: usize, max_waiting: usize, limits: RunLimits) -> Runner {
    let catalog = Catalog::load(&root()).expect("the book's catalog");
    let mut runner = Runner::new(catalog, slots, limits);
    runner.queue = Queue::new(slots, max_waiting);
    runner.work = runner.catalog.root.join("target/book-runner-tests");
    runner
}

pub struct Served {
    pub port: u16,
    pub token: String,
    pub runner: Arc<Runner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `runner` on an ephemeral loopback port.
pub async fn serve(runner: Runner) -> Served {
    let listener = server::bind(0).await.expect("a loopback port");
    let port = listener.local_addr().expect("an address").port();
    let token = book_runner::new_secret().expect("a secret");
    let runner = Arc::new(runner);
    let access = Access {
        port,
        origins: vec![BOOK_ORIGIN.to_string()],
        token: token.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = server::router(Arc::clone(&runner), access);
    tokio::spawn(server::serve(listener, router, async {
        let _ = stopped.await;
    }));
    Served {
        port,
        token,
        runner,
        stop: Some(stop),
    }
}

/// An answer: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The JSON events of a streamed run.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.body
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect()
    }

    /// The `error` a refusal carries.
    pub fn error(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_default()
    }
}

/// Sends one request with exactly these headers and waits for the whole
/// answer.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the runner accepts");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1 connection");
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// The headers a book page sends, with the right host, origin and secret.
pub fn good_headers<'a>(served: &'a Served, host: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("host", host),
        ("origin", BOOK_ORIGIN),
        (
            "authorization",
            Box::leak(format!("Bearer {}", served.token).into_boxed_str()),
        ),
        ("content-type", "application/json"),
    ]
}

/// A run request for the block `id` with the code the book shows.
pub fn unedited_run(served: &Served, id: &str, args: &[&str]) -> Vec<u8> {
    let block = &served.runner.catalog.blocks[id];
    serde_json::json!({
        "block": id,
        "code": block.shown().expect("the listing's file"),
        "args": args,
    })
    .to_string()
    .into_bytes()
}

/// Processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(marker) && !text.contains("cargo test") {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// The processes whose parent is this test process.
pub fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let parent = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(str::trim);
        if parent == Some(me.as_str()) {
            found.push(status.lines().next().unwrap_or_default().to_string());
        }
    }
    found
}
