//! How soon a reader sees output after pressing Run: `cargo bench -p
//! book-runner`. Times, from the request to the program's first line of
//! output, with Listing 3-1 and one build slot (medians of N runs each):
//!
//! - unedited, the program already built by the workspace;
//! - edited, warm: the listing's scratch copy and build exist (each run
//!   changes the code, so each run really rebuilds);
//! - first edit: no scratch copy of the listing yet, the slot's build of the
//!   dependencies warm;
//! - cold: an empty slot (its target directory built from nothing).
//!
//! The edited cases are measured twice: with the slot's own target
//! directory (the runner's default) and with the workspace's (`--shared-target`).
//! It builds under `target/book-runner-bench/`, never in the runner's slots.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use book_runner::catalog::Catalog;
use book_runner::run::{Event, RunLimits, Runner, TargetMode};
use tokio::sync::mpsc;

const BLOCK: &str = "ch03-deadlock-on-the-io-thread/1";

struct Timing {
    first_output: Duration,
    outcome: String,
}

async fn run_once(runner: &Arc<Runner>, code: &str) -> Timing {
    let started = Instant::now();
    let prepared = runner
        .prepare(BLOCK, code, &[])
        .unwrap_or_else(|r| panic!("refused: {}", r.message));
    let (tx, mut rx) = mpsc::channel(256);
    tokio::spawn(Arc::clone(runner).run(prepared, tx));
    let mut first_output = None;
    let mut outcome = String::new();
    let mut said = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Stdout { .. } if first_output.is_none() => {
                first_output = Some(started.elapsed());
            }
            Event::Building { line } | Event::Stderr { text: line } => {
                said.push_str(&line);
                said.push('\n');
            }
            Event::Finished { outcome: o, .. } => outcome = o.name().to_string(),
            _ => {}
        }
    }
    Timing {
        first_output: first_output
            .unwrap_or_else(|| panic!("no output; outcome {outcome}:\n{said}")),
        outcome,
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn report(name: &str, times: Vec<Duration>) {
    let shown: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    println!(
        "{name:<46} median {:>6.2} s  (n = {}; {} s)",
        median(times.clone()).as_secs_f64(),
        times.len(),
        shown.join(" ")
    );
}

fn runner(mode: TargetMode) -> Arc<Runner> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Catalog::load(&root).expect("the book's catalog");
    let mut runner = Runner::new(catalog, 1, RunLimits::default());
    runner.work = runner.catalog.root.join("target/book-runner-bench");
    runner.target_mode = mode;
    Arc::new(runner)
}

/// The code of Listing 3-1 as shown, with a comment that makes it `n`
/// (so that every run is an edit cargo must rebuild).
fn edit(shown: &str, n: usize) -> String {
    format!("{shown}\n// edit {n}")
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let cold_runs: usize = std::env::var("BENCH_COLD_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let slots = runner(TargetMode::PerSlot);
    let shown = slots.catalog.blocks[BLOCK].shown().expect("Listing 3-1");
    let scratch = slots.work.join("slot-0/listing-03-01");
    let slot = slots.work.join("slot-0");
    println!("Listing 3-1, time from Run to the program's first line of output:");

    // Unedited: the workspace's own build (warm it once first).
    run_once(&slots, &shown).await;
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(run_once(&slots, &shown).await.first_output);
    }
    report("unedited, already built", times);

    // Cold: an empty slot.
    let mut times = Vec::new();
    for n in 0..cold_runs {
        let _ = std::fs::remove_dir_all(&slot);
        times.push(run_once(&slots, &edit(&shown, n)).await.first_output);
    }
    report("edited, cold (empty slot target)", times);

    for (mode, label) in [
        (TargetMode::PerSlot, "slot target"),
        (TargetMode::Shared, "workspace target"),
    ] {
        let runner = runner(mode);
        // First edit: no scratch copy, dependencies built.
        run_once(&runner, &edit(&shown, 1000)).await;
        let mut times = Vec::new();
        for n in 0..runs {
            let _ = std::fs::remove_dir_all(&scratch);
            times.push(
                run_once(&runner, &edit(&shown, 2000 + n))
                    .await
                    .first_output,
            );
        }
        report(&format!("first edit ({label})"), times);
        // Warm edits.
        let mut times = Vec::new();
        let mut outcome = String::new();
        for n in 0..runs {
            let timing = run_once(&runner, &edit(&shown, 3000 + n)).await;
            outcome = timing.outcome;
            times.push(timing.first_output);
        }
        report(&format!("edited, warm ({label})"), times);
        assert_eq!(outcome, "deadlock");
    }
}
