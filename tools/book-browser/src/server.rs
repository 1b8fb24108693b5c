//! A static file server for the built book, on 127.0.0.1 at a free port, so
//! the browser sees the book as a reader does (`/` is the book's root, which
//! `404.html`'s `<base href="/">` relies on). One thread accepts; each
//! connection gets a short-lived thread of its own, so an idle connection the
//! browser opens ahead of time cannot hold up the others. Every request for a
//! missing file is remembered, for the page checks to report.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long a connection may take to send its request line and headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server; dropping it stops the accepting thread.
pub struct BookServer {
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    missing: Arc<Mutex<Vec<String>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl BookServer {
    /// Serves the files under `root` on a free port of 127.0.0.1.
    pub fn start(root: &Path) -> Result<BookServer, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let stopping = Arc::new(AtomicBool::new(false));
        let missing = Arc::new(Mutex::new(Vec::new()));
        let root = root.to_path_buf();
        let acceptor = {
            let stopping = Arc::clone(&stopping);
            let missing = Arc::clone(&missing);
            thread::Builder::new()
                .name("book-server".to_string())
                .spawn(move || {
                    for connection in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(connection) = connection else { continue };
                        let root = root.clone();
                        let missing = Arc::clone(&missing);
                        let _ = thread::Builder::new()
                            .name("book-server-connection".to_string())
                            .spawn(move || serve_connection(connection, &root, &missing));
                    }
                })
                .map_err(|e| format!("start the server thread: {e}"))?
        };
        Ok(BookServer {
            address,
            stopping,
            missing,
            acceptor: Some(acceptor),
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
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Answers one request on `connection`, then closes it.
fn serve_connection(connection: TcpStream, root: &Path, missing: &Mutex<Vec<String>>) {
    let _ = connection.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = connection.set_write_timeout(Some(REQUEST_TIMEOUT));
    let mut reader = BufReader::new(&connection);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers: nothing in them changes the answer.
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" || header == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("/"),
    );
    let mut writer = &connection;
    let answer = if method != "GET" && method != "HEAD" {
        plain_answer(405, "Method Not Allowed")
    } else {
        match file_for(root, target).and_then(|path| fs::read(&path).ok().map(|body| (path, body)))
        {
            Some((path, body)) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                    content_type(&path),
                    body.len()
                );
                let mut answer = head.into_bytes();
                if method == "GET" {
                    answer.extend_from_slice(&body);
                }
                answer
            }
            None => {
                missing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(target.to_string());
                plain_answer(404, "Not Found")
            }
        }
    };
    let _ = writer.write_all(&answer);
    let _ = writer.flush();
}

/// A short text/plain response with `status`.
fn plain_answer(status: u16, reason: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    )
    .into_bytes()
}

/// The file under `root` that the request target names, if it exists:
/// the query and fragment are dropped, `%XX` escapes decoded, a directory
/// means its `index.html`, and nothing outside `root` is ever served.
pub fn file_for(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let decoded = percent_decode(path)?;
    let mut file = root.to_path_buf();
    for component in Path::new(decoded.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => file.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    file.is_file().then_some(file)
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The `Content-Type` of a file of the built book, from its extension.
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("ico") => "image/x-icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("otf") => "font/otf",
        Some("eot") => "application/vnd.ms-fontobject",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;
    use awd::watchdog::TestLimit;

    #[test]
    fn content_types_follow_the_extension() {
        let _limit = TestLimit::seconds(5);
        let of = |name: &str| content_type(Path::new(name));
        assert_eq!(of("ch00-introduction.html"), "text/html; charset=utf-8");
        assert_eq!(of("css/chrome.css"), "text/css; charset=utf-8");
        assert_eq!(of("book.js"), "text/javascript; charset=utf-8");
        assert_eq!(of("theme/deadlock.svg"), "image/svg+xml");
        assert_eq!(of("favicon.PNG"), "image/png");
        assert_eq!(
            of("fonts/open-sans-v17-all-charsets-regular.woff2"),
            "font/woff2"
        );
        assert_eq!(
            of("FontAwesome/fonts/fontawesome-webfont.woff"),
            "font/woff"
        );
        assert_eq!(of("searchindex.json"), "application/json");
        assert_eq!(of("LICENSE"), "application/octet-stream");
    }

    #[test]
    fn targets_map_to_files_inside_the_root_only() {
        let _limit = TestLimit::seconds(5);
        let root = std::env::temp_dir().join(format!("book-browser-files-{}", std::process::id()));
        fs::create_dir_all(root.join("sub dir")).unwrap();
        fs::write(root.join("index.html"), "home").unwrap();
        fs::write(root.join("sub dir/a.css"), "a").unwrap();
        assert_eq!(file_for(&root, "/"), Some(root.join("index.html")));
        assert_eq!(
            file_for(&root, "/index.html?x=1#top"),
            Some(root.join("index.html"))
        );
        assert_eq!(
            file_for(&root, "/sub%20dir/a.css"),
            Some(root.join("sub dir/a.css"))
        );
        assert_eq!(file_for(&root, "/../index.html"), None);
        assert_eq!(file_for(&root, "/missing.html"), None);
        assert_eq!(file_for(&root, "/bad%zz"), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_server_answers_and_remembers_what_was_missing() {
        let _limit = TestLimit::seconds(10);
        let root = std::env::temp_dir().join(format!("book-browser-serve-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("index.html"), "<p>hi</p>").unwrap();
        let server = BookServer::start(&root).unwrap();
        let address: SocketAddr = server.root_url()["http://".len()..]
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let found = http::request(address, "GET", "/", None, Duration::from_secs(5)).unwrap();
        assert_eq!(found.status, 200);
        assert_eq!(
            found.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(found.body, b"<p>hi</p>");
        let lost =
            http::request(address, "GET", "/gone.png", None, Duration::from_secs(5)).unwrap();
        assert_eq!(lost.status, 404);
        assert_eq!(server.take_missing(), ["/gone.png"]);
        assert!(server.take_missing().is_empty());
        drop(server);
        fs::remove_dir_all(&root).unwrap();
    }
}
