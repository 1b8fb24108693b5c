//! The smallest HTTP/1.1 client that can talk to ChromeDriver: one request
//! per connection (`Connection: close`), a JSON or empty body, and a response
//! read to the end of the stream within a time limit. The parsing is separate
//! from the socket so it can be tested without a server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A parsed HTTP response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code, such as 200 or 404.
    pub status: u16,
    /// The headers in the order they came, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked transfer encoding removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends `method path` to `server` with an optional JSON body and returns the
/// response, giving up after `limit` in total (connecting, writing, reading).
pub fn request(
    server: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&[u8]>,
    limit: Duration,
) -> Result<Response, String> {
    let give_up_at = Instant::now() + limit;
    let remaining = || {
        give_up_at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut stream = TcpStream::connect_timeout(&server, remaining())
        .map_err(|e| format!("connect to {server}: {e}"))?;
    let body = json_body.unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if json_body.is_some() {
        head.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream
        .set_write_timeout(Some(remaining()))
        .and_then(|()| stream.write_all(head.as_bytes()))
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("{method} {path}: sending: {e}"))?;

    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= give_up_at {
            return Err(format!(
                "{method} {path}: no complete answer within {limit:?}"
            ));
        }
        stream
            .set_read_timeout(Some(remaining()))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "{method} {path}: no complete answer within {limit:?}"
                ));
            }
            Err(e) => return Err(format!("{method} {path}: reading: {e}")),
        }
        // A server may keep the connection open after a complete response.
        if response_is_complete(&raw) {
            break;
        }
    }
    parse_response(&raw).map_err(|e| format!("{method} {path}: {e}"))
}

/// Splits `raw` at the blank line that ends the headers.
fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    raw.windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| (&raw[..at], &raw[at + 4..]))
}

/// True when `raw` holds a whole response whose end is known from its
/// headers (a `Content-Length` reached, or the last chunk of a chunked body).
fn response_is_complete(raw: &[u8]) -> bool {
    let Some((head, body)) = split_head(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return decode_chunked(body).is_ok();
    }
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|length| length.trim().parse::<usize>().ok())
        .is_some_and(|length| body.len() >= length)
}

/// Parses a complete HTTP/1.x response: status line, headers, and a body
/// delimited by `Content-Length`, by chunked encoding, or by the end of `raw`.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let (head, rest) = split_head(raw).ok_or("the response has no end of headers")?;
    let head = std::str::from_utf8(head).map_err(|_| "the response headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"));
    response.body = if chunked {
        decode_chunked(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad Content-Length {length:?}"))?;
        if rest.len() < length {
            return Err(format!(
                "the body is cut short: {} of {length} bytes",
                rest.len()
            ));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

/// Decodes a chunked body; an error means it is malformed or not yet complete.
fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("a chunk size line is cut short")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("a chunk is cut short".to_string());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn a_response_with_a_length_is_parsed() {
        let _limit = TestLimit::seconds(5);
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{\"value\":1}";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.body, b"{\"value\":1}");
        assert!(response_is_complete(raw));
        assert!(!response_is_complete(&raw[..raw.len() - 1]));
        assert!(parse_response(&raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn a_chunked_response_is_joined() {
        let _limit = TestLimit::seconds(5);
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 404);
        assert_eq!(response.body, b"Wikipedia");
        assert!(response_is_complete(raw));
        assert!(!response_is_complete(&raw[..raw.len() - 7]));
    }

    #[test]
    fn a_body_without_length_runs_to_the_end_and_garbage_is_refused() {
        let _limit = TestLimit::seconds(5);
        let response = parse_response(b"HTTP/1.0 500 Oops\r\nX: y\r\n\r\nall of it").unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (500, &b"all of it"[..])
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
    }
}
