//! Who may ask the runner to run code, and what a request may carry: one
//! test per rule of the crate's threat model. Every refusal is checked to
//! have a clear status and message and to start nothing.

mod common;

use awd::watchdog::TestLimit;
use book_runner::limits;
use book_runner::run::RunLimits;
use common::*;

/// Nothing was started: no process group, nobody in the queue.
fn nothing_started(served: &Served) {
    assert_eq!(served.runner.queue.waiting(), 0, "a refused request queued");
    assert!(
        limits::live_groups().is_empty(),
        "a refused request started a process"
    );
}

#[tokio::test]
async fn it_binds_loopback_only() {
    let _limit = TestLimit::seconds(20);
    let listener = book_runner::server::bind(0).await.unwrap();
    let address = listener.local_addr().unwrap();
    assert!(address.ip().is_loopback(), "bound to {address}");
    // Another address of this machine (the one a route to the outside would
    // use; connecting a UDP socket sends nothing) must not reach it.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    if probe.connect("192.0.2.1:9").is_ok() {
        let own = probe.local_addr().unwrap().ip();
        if !own.is_loopback() && !own.is_unspecified() {
            let reached = tokio::net::TcpStream::connect((own, address.port())).await;
            assert!(reached.is_err(), "the runner answered on {own}");
        }
    }
}

#[tokio::test]
async fn a_host_that_is_not_its_own_is_refused() {
    let _limit = TestLimit::seconds(20);
    let served = serve(runner(1, 4, RunLimits::default())).await;
    let port = served.port;
    // A DNS-rebinding page: same origin as itself, its name resolved to
    // 127.0.0.1, so its requests carry its own Host.
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port + 1),
        "127.0.0.1".to_string(),
        String::new(),
    ] {
        let mut headers = good_headers(&served, &host);
        if host.is_empty() {
            headers.retain(|(n, _)| *n != "host");
        }
        let answer = send(
            port,
            "POST",
            "/api/run",
            &headers,
            unedited_run(&served, "ch03-deadlock-on-the-io-thread/1", &[]),
        )
        .await;
        assert_eq!(answer.status, 403, "Host {host:?}: {}", answer.body);
        assert!(answer.error().contains("is not this runner's own address"));
    }
    for host in [format!("127.0.0.1:{port}"), format!("LOCALHOST:{port}")] {
        let answer = send(
            port,
            "GET",
            "/api/hello",
            &good_headers(&served, &host),
            vec![],
        )
        .await;
        assert_eq!(answer.status, 200, "Host {host:?}: {}", answer.body);
    }
    nothing_started(&served);
}

#[tokio::test]
async fn an_origin_that_is_not_the_books_is_refused() {
    let _limit = TestLimit::seconds(20);
    let served = serve(runner(1, 4, RunLimits::default())).await;
    let host = format!("127.0.0.1:{}", served.port);
    let token = format!("Bearer {}", served.token);
    // Another website, a second local origin, and the book's own host on
    // another port: all refused, with the secret or without.
    for origin in [
        "https://evil.example",
        "http://localhost:4000",
        "http://127.0.0.1:3001",
        "null",
    ] {
        let headers = [
            ("host", host.as_str()),
            ("origin", origin),
            ("authorization", token.as_str()),
            ("content-type", "application/json"),
        ];
        let body = unedited_run(&served, "ch03-deadlock-on-the-io-thread/1", &[]);
        let answer = send(served.port, "POST", "/api/run", &headers, body).await;
        assert_eq!(answer.status, 403, "Origin {origin}: {}", answer.body);
        assert!(answer.error().contains("not from the book's pages"));
        assert!(
            answer.headers.get("access-control-allow-origin").is_none(),
            "a foreign origin got a CORS grant"
        );
        // Its preflight gets no grant either.
        let preflight = [
            ("host", host.as_str()),
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ];
        let answer = send(served.port, "OPTIONS", "/api/run", &preflight, vec![]).await;
        assert_eq!(answer.status, 403);
        assert!(answer.headers.get("access-control-allow-origin").is_none());
    }
    // The book's own preflight is granted, for its origin only.
    let preflight = [
        ("host", host.as_str()),
        ("origin", BOOK_ORIGIN),
        ("access-control-request-method", "POST"),
    ];
    let answer = send(served.port, "OPTIONS", "/api/run", &preflight, vec![]).await;
    assert_eq!(answer.status, 204);
    assert_eq!(
        answer.headers["access-control-allow-origin"]
            .to_str()
            .unwrap(),
        BOOK_ORIGIN
    );
    nothing_started(&served);
}

#[tokio::test]
async fn the_secret_of_this_start_is_required() {
    let _limit = TestLimit::seconds(20);
    let served = serve(runner(1, 4, RunLimits::default())).await;
    let host = format!("127.0.0.1:{}", served.port);
    let other_start = format!("Bearer {}", book_runner::new_secret().unwrap());
    let truncated = format!("Bearer {}", &served.token[..63]);
    for authorization in [
        None,
        Some(other_start.as_str()),
        Some(truncated.as_str()),
        Some("Bearer "),
    ] {
        let mut headers = vec![("host", host.as_str()), ("origin", BOOK_ORIGIN)];
        if let Some(value) = authorization {
            headers.push(("authorization", value));
        }
        for (method, path) in [
            ("POST", "/api/run"),
            ("GET", "/api/blocks?page=ch03-deadlock-on-the-io-thread"),
            ("POST", "/api/stop"),
        ] {
            let body = unedited_run(&served, "ch03-deadlock-on-the-io-thread/1", &[]);
            let answer = send(served.port, method, path, &headers, body).await;
            assert_eq!(answer.status, 401, "{method} {path} with {authorization:?}");
            assert!(answer
                .error()
                .contains("does not carry the runner's secret"));
        }
    }
    let answer = send(
        served.port,
        "GET",
        "/api/blocks?page=ch03-deadlock-on-the-io-thread",
        &good_headers(&served, &host),
        vec![],
    )
    .await;
    assert_eq!(answer.status, 200);
    nothing_started(&served);
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused() {
    let _limit = TestLimit::seconds(20);
    let served = serve(runner(1, 4, RunLimits::default())).await;
    let host = format!("127.0.0.1:{}", served.port);
    let code = "x".repeat(64 * 1024);
    let body =
        serde_json::json!({"block": "ch03-deadlock-on-the-io-thread/1", "code": code, "args": []})
            .to_string()
            .into_bytes();
    // With a Content-Length, refused before the body is read.
    let answer = send(
        served.port,
        "POST",
        "/api/run",
        &good_headers(&served, &host),
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert!(answer.error().contains("at most 64 KiB"));
    // Streamed without a length: refused once 64 KiB have arrived.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", served.port))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let chunks = futures::stream::iter(
        body.chunks(8192)
            .map(|c| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                    hyper::body::Bytes::copy_from_slice(c),
                ))
            })
            .collect::<Vec<_>>(),
    );
    let mut request = hyper::Request::builder().method("POST").uri("/api/run");
    for (name, value) in good_headers(&served, &host) {
        request = request.header(name, value);
    }
    let request = request
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    nothing_started(&served);
}

#[tokio::test]
async fn only_the_books_own_blocks_and_arguments_run() {
    let _limit = TestLimit::seconds(20);
    let served = serve(runner(1, 4, RunLimits::default())).await;
    let host = format!("127.0.0.1:{}", served.port);
    let headers = good_headers(&served, &host);
    for id in [
        "../../../../etc/passwd",
        "/etc/passwd",
        "listings/ch03-deadlock-on-the-io-thread/listing-03-01",
        "ch03-deadlock-on-the-io-thread/99",
        "",
    ] {
        let body = serde_json::json!({"block": id, "code": "fn main() {}", "args": []});
        let answer = send(
            served.port,
            "POST",
            "/api/run",
            &headers,
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(answer.status, 404, "{id}: {}", answer.body);
        assert!(answer.error().contains("no such block in this book"));
    }
    // Arguments: only a list the book shows for this listing.
    for args in [&["--evil"][..], &["--together", "--together"], &["../x"]] {
        let body = unedited_run(&served, "ch03-deadlock-on-the-io-thread/1", args);
        let answer = send(served.port, "POST", "/api/run", &headers, body).await;
        assert_eq!(answer.status, 400, "{args:?}: {}", answer.body);
        assert!(answer
            .error()
            .contains("only with the arguments the book shows"));
    }
    // Not JSON, or not a run.
    let answer = send(
        served.port,
        "POST",
        "/api/run",
        &headers,
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400);
    let answer = send(
        served.port,
        "POST",
        "/api/run",
        &headers,
        b"{\"block\": 1}".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400);
    // No such endpoint, no such method.
    let answer = send(served.port, "GET", "/etc/passwd", &headers, vec![]).await;
    assert_eq!(answer.status, 404);
    let answer = send(served.port, "GET", "/api/run", &headers, vec![]).await;
    assert_eq!(answer.status, 405);
    nothing_started(&served);
}
