//! The runner exiting (Ctrl-C or SIGTERM) kills every run still going, with
//! its whole process group. In a test binary of its own: `kill_all` ends
//! every group this process started.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use awd::watchdog::TestLimit;
use book_runner::limits;
use book_runner::run::{Event, RunLimits};
use book_runner::verdict::Outcome;
use common::*;
use tokio::sync::{mpsc, Notify};

#[tokio::test]
async fn the_runner_exiting_kills_every_run() {
    let _limit = TestLimit::seconds(30);
    let runner = Arc::new(runner(
        1,
        1,
        RunLimits {
            wall: Duration::from_secs(25),
            ..RunLimits::default()
        },
    ));
    let marker = "1000.4545";
    let (tx, mut rx) = mpsc::channel(64);
    let script = format!("sleep {marker} & echo started; sleep {marker}");
    let running = {
        let runner = Arc::clone(&runner);
        tokio::spawn(async move {
            let args = vec!["-c".to_string(), script];
            runner
                .execute(
                    Path::new("/bin/sh"),
                    &args,
                    &runner.work.join("unused.tsv"),
                    &tx,
                    &Notify::new(),
                )
                .await
        })
    };
    while let Some(event) = rx.recv().await {
        if matches!(event, Event::Stdout { .. }) {
            break;
        }
    }
    assert!(
        processes_with(marker).len() >= 2,
        "{:?}",
        processes_with(marker)
    );
    // What the runner does on Ctrl-C or SIGTERM.
    limits::kill_all();
    let (outcome, status, _) = running.await.unwrap();
    assert_eq!(
        (outcome, status),
        (Outcome::Failed, None),
        "killed by a signal"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        processes_with(marker).is_empty(),
        "left behind: {:?}",
        processes_with(marker)
    );
    while rx.recv().await.is_some() {}
}
