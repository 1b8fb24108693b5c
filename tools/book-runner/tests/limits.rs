//! The limits on a run: wall time, output, memory and processes, and the
//! whole process group killed on timeout, on Stop, when the page goes away
//! and when the runner exits. These run `/bin/sh` programs through the very
//! code that runs a reader's program (`Runner::execute`), so no build is
//! needed.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use awd::watchdog::TestLimit;
use book_runner::limits;
use book_runner::run::{Event, RunLimits};
use book_runner::verdict::Outcome;
use common::*;
use tokio::sync::{mpsc, Notify};

fn limits_of(wall: u64, output: usize) -> RunLimits {
    RunLimits {
        wall: Duration::from_secs(wall),
        output,
        ..RunLimits::default()
    }
}

/// Runs `script` with `sh -c` through `Runner::execute`; returns the
/// outcome, the status and what it printed.
async fn sh(
    runner: &book_runner::run::Runner,
    script: &str,
    stop: &Notify,
) -> (Outcome, Option<i32>, String) {
    let (tx, mut rx) = mpsc::channel(64);
    let timeline = runner.work.join("unused.tsv");
    let args = vec!["-c".to_string(), script.to_string()];
    let run = async move {
        let result = runner
            .execute(Path::new("/bin/sh"), &args, &timeline, &tx, stop)
            .await;
        drop(tx);
        result
    };
    let collect = async {
        let mut text = String::new();
        while let Some(event) = rx.recv().await {
            match event {
                Event::Stdout { text: t } | Event::Stderr { text: t } | Event::Cut { text: t } => {
                    text.push_str(&t)
                }
                _ => {}
            }
        }
        text
    };
    let ((outcome, status, _), text) = tokio::join!(run, collect);
    (outcome, status, text)
}

#[tokio::test]
async fn a_run_past_its_wall_time_is_killed_with_its_whole_group() {
    let _limit = TestLimit::seconds(30);
    let runner = runner(1, 1, limits_of(1, 1 << 20));
    let marker = "1000.4242";
    let started = Instant::now();
    let script = format!("sleep {marker} & sleep {marker}; echo never");
    let (outcome, _, text) = sh(&runner, &script, &Notify::new()).await;
    assert_eq!(outcome, Outcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!text.contains("never"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        processes_with(marker).is_empty(),
        "left behind: {:?}",
        processes_with(marker)
    );
}

#[tokio::test]
async fn output_past_the_limit_is_cut_with_a_notice() {
    let _limit = TestLimit::seconds(30);
    let runner = runner(1, 1, limits_of(20, 64 * 1024));
    let (outcome, _, text) = sh(&runner, "yes 0123456789", &Notify::new()).await;
    assert_eq!(outcome, Outcome::OutputCut);
    assert!(text.contains("[output cut at 64 KiB: the program was stopped]"));
    let printed = text.len() - text.rfind('[').map_or(0, |at| text.len() - at);
    assert!(printed <= 64 * 1024, "{printed} bytes passed");
    // SIGKILL is delivered at once but a busy machine takes a moment to
    // end the process: wait up to 2 s for it to be gone.
    let killed = Instant::now();
    while !processes_with("yes 0123456789").is_empty() && killed.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        processes_with("yes 0123456789").is_empty(),
        "left behind: {:?}",
        processes_with("yes 0123456789")
    );
}

#[tokio::test]
async fn memory_and_processes_are_limited() {
    let _limit = TestLimit::seconds(30);
    let runner = runner(1, 1, limits_of(20, 1 << 20));
    let (outcome, _, text) = sh(&runner, "cat /proc/self/limits", &Notify::new()).await;
    assert_eq!(outcome, Outcome::Completed, "{text}");
    let soft = |name: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        line[name.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(soft("Max address space"), (2u64 << 30).to_string());
    let processes: u64 = soft("Max processes").parse().expect("a number");
    assert!(
        processes > limits::EXTRA_PROCESSES && processes < 1_000_000,
        "{processes}"
    );
    assert_eq!(soft("Max cpu time"), "60");
    assert_eq!(soft("Max file size"), (64u64 << 20).to_string());
    assert_eq!(soft("Max core file size"), "0");
}

#[tokio::test]
async fn stop_and_a_page_that_goes_away_end_the_whole_group() {
    let _limit = TestLimit::seconds(30);
    let runner = Arc::new(runner(1, 1, limits_of(25, 1 << 20)));
    // Stop.
    let marker = "1000.4343";
    let stop = Arc::new(Notify::new());
    let stopper = Arc::clone(&stop);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopper.notify_one();
    });
    let script = format!("sleep {marker} & echo started; sleep {marker}");
    let started = Instant::now();
    let (outcome, _, text) = sh(&runner, &script, &stop).await;
    assert_eq!(outcome, Outcome::Stopped);
    assert!(text.contains("started"));
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        processes_with(marker).is_empty(),
        "left behind: {:?}",
        processes_with(marker)
    );
    // The page goes away: its events are no longer read.
    let marker = "1000.4444";
    let (tx, rx) = mpsc::channel(64);
    let script = format!("sleep {marker} & sleep {marker}");
    let timeline = runner.work.join("unused.tsv");
    let args = vec!["-c".to_string(), script];
    let dropper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(rx);
    });
    let started = Instant::now();
    let (outcome, _, _) = runner
        .execute(Path::new("/bin/sh"), &args, &timeline, &tx, &Notify::new())
        .await;
    dropper.await.unwrap();
    assert_eq!(outcome, Outcome::Stopped);
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        processes_with(marker).is_empty(),
        "left behind: {:?}",
        processes_with(marker)
    );
}
