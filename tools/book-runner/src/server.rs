//! The runner's HTTP interface (axum on hyper): who may ask, what a request
//! may carry, and the three endpoints the book's pages use.
//!
//! Every request passes [`guard`] before anything else reads it: its `Host`
//! must be the runner's own loopback name and port, its `Origin` (when it
//! has one) must be the book's, and, except for a CORS preflight, it must
//! carry the secret made at this start. Each refusal is a clear status with
//! a JSON `{"error": …}` and starts nothing.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::run::{Refusal, Runner};

/// The largest request body the runner reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Who may ask.
#[derive(Clone, Debug)]
pub struct Access {
    /// The port the runner listens on (for the `Host` check).
    pub port: u16,
    /// The origins of the book's pages.
    pub origins: Vec<String>,
    /// The secret made at this start.
    pub token: String,
}

impl Access {
    /// The book's origins when `mdbook serve` listens on `book_port`.
    pub fn book_origins(book_port: u16) -> Vec<String> {
        ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|host| format!("http://{host}:{book_port}"))
            .collect()
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host == format!("127.0.0.1:{}", self.port) || host == format!("localhost:{}", self.port)
    }
}

#[derive(Clone)]
struct AppState {
    runner: Arc<Runner>,
    access: Arc<Access>,
}

fn refusal(refusal: Refusal, origin: Option<&HeaderValue>) -> Response {
    let mut response = (
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": refusal.message }).to_string(),
    )
        .into_response();
    if let Some(origin) = origin {
        allow_origin(response.headers_mut(), origin);
    }
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Checks `Host`, `Origin` and the secret, in that order; answers a CORS
/// preflight from the book's origin.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let access = &state.access;
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !access.host_allowed(host) {
        return refusal(
            Refusal::new(
                403,
                format!(
                    "refused: the Host {host:?} is not this runner's own address \
                     (127.0.0.1:{0} or localhost:{0})",
                    access.port
                ),
            ),
            None,
        );
    }
    let origin = headers.get(header::ORIGIN).cloned();
    if let Some(origin) = &origin {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| access.origins.iter().any(|a| a == o));
        if !allowed {
            return refusal(
                Refusal::new(
                    403,
                    format!(
                        "refused: requests from {:?} are not from the book's pages",
                        origin.to_str().unwrap_or("?")
                    ),
                ),
                None,
            );
        }
    }
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        if let Some(origin) = &origin {
            allow_origin(headers, origin);
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(token.as_bytes(), access.token.as_bytes()) {
        return refusal(
            Refusal::new(
                401,
                "refused: this request does not carry the runner's secret; open the book \
                 through the link the runner printed when it started",
            ),
            origin.as_ref(),
        );
    }
    let too_long = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<usize>().ok())
        .is_some_and(|n| n > BODY_LIMIT);
    if too_long {
        return refusal(body_too_long(), origin.as_ref());
    }
    let mut response = next.run(request).await;
    if let Some(origin) = &origin {
        allow_origin(response.headers_mut(), origin);
    }
    response
}

fn body_too_long() -> Refusal {
    Refusal::new(
        413,
        format!(
            "refused: a request body may hold at most {} KiB",
            BODY_LIMIT / 1024
        ),
    )
}

/// Reads a JSON body of at most [`BODY_LIMIT`] bytes.
async fn json_body(body: Body) -> Result<Value, Refusal> {
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| body_too_long())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::new(400, format!("the request is not JSON: {e}")))
}

async fn blocks(State(state): State<AppState>, request: Request) -> Response {
    let page = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("page="))
        .unwrap_or("");
    let blocks: Vec<Value> = state
        .runner
        .catalog
        .chapter(page)
        .into_iter()
        .map(|b| {
            json!({
                "id": b.id,
                "package": b.package,
                "listing": b.listing,
                "expect": b.expect.name(),
                "editable": b.editable(),
                "shown": b.shown().unwrap_or_default(),
                "variants": b.variants,
                "command": b.command,
                "not_run": b.not_run,
            })
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "blocks": blocks, "slots": state.runner.queue.slots() }).to_string(),
    )
        .into_response()
}

async fn run(State(state): State<AppState>, request: Request) -> Response {
    let body = match json_body(request.into_body()).await {
        Ok(body) => body,
        Err(r) => return refusal(r, None),
    };
    let block = body["block"].as_str().unwrap_or("");
    let code = body["code"].as_str();
    let args: Option<Vec<String>> = match &body["args"] {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(|a| a.as_str().map(String::from)).collect(),
        _ => None,
    };
    let (Some(code), Some(args)) = (code, args) else {
        return refusal(
            Refusal::new(
                400,
                "a run needs {\"block\": id, \"code\": text, \"args\": [strings]}",
            ),
            None,
        );
    };
    let prepared = match state.runner.prepare(block, code, &args) {
        Ok(prepared) => prepared,
        Err(r) => return refusal(r, None),
    };
    let (events_tx, events) = mpsc::channel(256);
    tokio::spawn(Arc::clone(&state.runner).run(prepared, events_tx));
    let stream = futures::stream::unfold(events, |mut events| async move {
        let event = events.recv().await?;
        Some((Ok::<_, Infallible>(Bytes::from(event.to_line())), events))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn stop(State(state): State<AppState>, request: Request) -> Response {
    let body = match json_body(request.into_body()).await {
        Ok(body) => body,
        Err(r) => return refusal(r, None),
    };
    let stopped = state.runner.stop(body["run"].as_str().unwrap_or(""));
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "stopped": stopped }).to_string(),
    )
        .into_response()
}

async fn hello() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "runner": "book-runner", "version": env!("CARGO_PKG_VERSION") }).to_string(),
    )
        .into_response()
}

/// The runner's routes, behind the guard.
pub fn router(runner: Arc<Runner>, access: Access) -> Router {
    let state = AppState {
        runner,
        access: Arc::new(access),
    };
    Router::new()
        .route("/api/hello", get(hello))
        .route("/api/blocks", get(blocks))
        .route("/api/run", post(run))
        .route("/api/stop", post(stop))
        .fallback(|| async {
            refusal(
                Refusal::new(404, "no such endpoint: the book's pages use /api/run"),
                None,
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Binds the runner's port on the loopback interface only.
pub async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
