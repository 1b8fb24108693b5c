//! Whole runs through the HTTP interface: Listing 3-1 as the book shows it
//! streams its first line, then the watchdog's deadlock report, its thread
//! timeline and the verdict; twenty runs sent at once each finish or are
//! refused cleanly, and leave no process behind.

mod common;

use std::time::Duration;

use awd::watchdog::TestLimit;
use book_runner::limits;
use book_runner::run::RunLimits;
use common::*;

const LISTING_3_1: &str = "ch03-deadlock-on-the-io-thread/1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_3_1_streams_its_lines_then_the_deadlock_report() {
    let _limit = TestLimit::seconds(300);
    let served = serve(runner(1, 4, RunLimits::default())).await;
    let host = format!("127.0.0.1:{}", served.port);
    let answer = send(
        served.port,
        "POST",
        "/api/run",
        &good_headers(&served, &host),
        unedited_run(&served, LISTING_3_1, &[]),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers["access-control-allow-origin"], BOOK_ORIGIN,
        "the book's page may read the answer"
    );
    let events = answer.events();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind);
    let stdout = position("stdout").expect("its first line");
    let stderr = position("stderr").expect("the watchdog's report");
    assert!(
        position("running").unwrap() < stdout && stdout < stderr,
        "{kinds:?}"
    );
    let report: String = events
        .iter()
        .filter(|e| e["event"] == "stderr")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(report.contains("deadlock"), "{report}");
    assert!(report.contains("=> a cycle"), "{report}");
    let timeline = events
        .iter()
        .find(|e| e["event"] == "timeline")
        .expect("a timeline");
    assert!(timeline["svg"]
        .as_str()
        .unwrap()
        .contains("blocked: waits for receive #2"));
    let finished = events.last().unwrap();
    assert_eq!(finished["event"], "finished");
    assert_eq!(finished["outcome"], "deadlock");
    assert_eq!(finished["status"], 3);
    assert_eq!(finished["verdict"], "Deadlocked, as the chapter says.");
    assert_eq!(finished["as_promised"], true);

    // The exercise's switch: header and body together; it completes.
    let answer = send(
        served.port,
        "POST",
        "/api/run",
        &good_headers(&served, &host),
        unedited_run(&served, LISTING_3_1, &["--together"]),
    )
    .await;
    let finished = answer.events().pop().unwrap();
    assert_eq!(finished["outcome"], "ok", "{}", answer.body);
    assert_eq!(
        finished["verdict"],
        "Completed, but the chapter says it deadlocked."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_runs_at_once_finish_or_are_refused_and_leave_nothing() {
    let _limit = TestLimit::seconds(300);
    // Two slots and room for eight to wait: of twenty, at least ten are
    // refused with 503, the others run to their verdict.
    let served = serve(runner(2, 8, RunLimits::default())).await;
    let host = format!("127.0.0.1:{}", served.port);
    let body = unedited_run(&served, LISTING_3_1, &[]);
    let mut requests = Vec::new();
    for _ in 0..20 {
        let headers: Vec<(String, String)> = good_headers(&served, &host)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let body = body.clone();
        let port = served.port;
        requests.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            send(port, "POST", "/api/run", &headers, body).await
        }));
    }
    let (mut finished, mut refused, mut queued) = (0, 0, 0);
    for request in requests {
        let answer = request.await.unwrap();
        match answer.status {
            200 => {
                let events = answer.events();
                let last = events.last().unwrap();
                assert_eq!(last["event"], "finished", "{}", answer.body);
                assert_eq!(last["outcome"], "deadlock", "{}", answer.body);
                if events.iter().any(|e| e["event"] == "queued") {
                    queued += 1;
                }
                finished += 1;
            }
            503 => {
                assert!(
                    answer.error().contains("the runner is busy"),
                    "{}",
                    answer.body
                );
                refused += 1;
            }
            other => panic!("status {other}: {}", answer.body),
        }
    }
    assert_eq!(finished + refused, 20);
    assert!(
        finished >= 10 && refused >= 1,
        "{finished} finished, {refused} refused"
    );
    assert!(queued > 0, "none waited in the queue");
    assert_eq!(served.runner.queue.waiting(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        limits::live_groups().is_empty(),
        "{:?}",
        limits::live_groups()
    );
    assert!(children().is_empty(), "left behind: {:?}", children());
}
