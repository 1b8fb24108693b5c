//! Serves the built book on 127.0.0.1 at a free port, so the browser sees the
//! book as a reader does (`/` is the book's root, which `404.html`'s
//! `<base href="/">` relies on). The files are served by `tower-http`'s
//! `ServeDir` under `axum`, on the run's Tokio runtime; a layer around it
//! marks every answer `no-store` and remembers every request for a missing
//! file, for the page checks to report.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tower_http::services::ServeDir;

/// The paths requested but not found.
type Missing = Arc<Mutex<Vec<String>>>;

/// The running server; dropping it stops it.
pub struct BookServer {
    address: SocketAddr,
    missing: Missing,
    task: JoinHandle<()>,
}

impl BookServer {
    /// Serves the files under `root` on a free port of 127.0.0.1, on
    /// `runtime`.
    pub fn start(runtime: &Handle, root: &Path) -> Result<BookServer, String> {
        let missing = Missing::default();
        let app = Router::new().fallback_service(ServeDir::new(root)).layer(
            middleware::from_fn_with_state(Arc::clone(&missing), remember_missing),
        );
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let task = runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("book-browser: the book's server stopped: {e}");
            }
        });
        Ok(BookServer {
            address,
            missing,
            task,
        })
    }

    /// The URL of the book's root, ending in `/`.
    pub fn root_url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// The paths requested but not found since the last call.
    pub fn take_missing(&self) -> Vec<String> {
        std::mem::take(&mut *self.missing.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for BookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Passes the request on, marks the answer `no-store`, and notes the
/// request's path and query when the file was not found.
async fn remember_missing(
    State(missing): State<Missing>,
    request: Request,
    next: Next,
) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map(|target| target.to_string())
        .unwrap_or_default();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if response.status() == StatusCode::NOT_FOUND {
        missing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(target);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::fs;

    /// Status, `Content-Type` and body of `GET url`.
    async fn get(url: &str) -> (u16, Option<String>, Vec<u8>) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let response = client.get(url.parse().unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_string());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, kind, body.to_vec())
    }

    #[test]
    fn the_server_answers_inside_its_root_and_remembers_what_was_missing() {
        let _limit = TestLimit::seconds(10);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let root = std::env::temp_dir().join(format!("book-browser-serve-{}", std::process::id()));
        fs::create_dir_all(root.join("sub dir")).unwrap();
        fs::write(root.join("index.html"), "<p>hi</p>").unwrap();
        fs::write(root.join("sub dir/a.css"), "a").unwrap();
        let outside = root.with_extension("secret");
        fs::write(&outside, "no").unwrap();
        let server = BookServer::start(runtime.handle(), &root).unwrap();
        let url = server.root_url();
        runtime.block_on(async {
            let (status, kind, body) = get(&url).await;
            assert_eq!(status, 200);
            assert_eq!(kind.as_deref(), Some("text/html"));
            assert_eq!(body, b"<p>hi</p>");
            let (status, kind, _) = get(&format!("{url}sub%20dir/a.css?x=1")).await;
            assert_eq!(status, 200);
            assert_eq!(kind.as_deref(), Some("text/css"));
            let escape = format!(
                "{url}..%2f{}",
                outside.file_name().unwrap().to_str().unwrap()
            );
            assert_eq!(get(&escape).await.0, 404);
            assert_eq!(get(&format!("{url}gone.png")).await.0, 404);
        });
        let missing = server.take_missing();
        assert_eq!(missing.len(), 2);
        assert_eq!(missing[1], "/gone.png");
        assert!(server.take_missing().is_empty());
        drop(server);
        fs::remove_dir_all(&root).unwrap();
        fs::remove_file(&outside).unwrap();
    }
}
