//! tokio's own form of blocking the completing thread: a task on the
//! multi-thread runtime completes what another task awaits, which wakes it on
//! this worker, then blocks the worker until that task answers. tokio keeps a
//! task woken on a worker in that worker's LIFO slot, which in tokio 1.54.1
//! no other worker takes (Chapter 7 says which versions differ), so the idle
//! worker stays idle and the two tasks wait for each other.
//!
//! `-- --block-in-place`, `-- --spawn-blocking` and `-- --await` wait for the
//! answer in the three ways that let the woken task run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, ThreadId};
use std::time::Duration;

use awd::completion_source::{
    completion_source, Abandoned, Completion, CompletionSource, Continuations,
};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;

/// How the requester waits for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Blocks its worker thread.
    Block,
    /// Blocks inside `tokio::task::block_in_place`.
    BlockInPlace,
    /// Blocks a thread of tokio's blocking pool, and awaits that.
    SpawnBlocking,
    /// Does not block: awaits the answer.
    Await,
}

// ANCHOR: hazard
/// Says it is waiting, waits for a request, and answers with its double.
async fn answerer(
    ready: CompletionSource<()>,
    request: Completion<u32>,
    answer: CompletionSource<u32>,
) {
    let _ = ready.set_result(()); // wakes the requester
    if let Ok(n) = request.await {
        let _ = answer.set_result(2 * n);
    }
}

/// Starts an answerer, completes its request, and waits for the answer.
async fn requester(wait: Wait) -> Result<u32, Abandoned> {
    let (ready_source, ready) = completion_source(Continuations::Inline);
    let (request_source, request) = completion_source(Continuations::Inline);
    let (answer_source, answer) = completion_source(Continuations::Inline);
    tokio::spawn(answerer(ready_source, request, answer_source));
    ready.await?; // the answerer now waits for its request
    let _ = request_source.set_result(21); // wakes the answerer, on this worker
    match wait {
        Wait::Block => {
            let _facts = waits::activity("task `requester` after it woke task `answerer` here");
            // tokio keeps the woken answerer in this worker's LIFO slot.
            let only_here = WaitsFor::Thread(waits::thread_name());
            waits::blocking("`Completion::wait`", only_here, || answer.wait())
        }
        Wait::BlockInPlace => tokio::task::block_in_place(|| answer.wait()),
        Wait::SpawnBlocking => tokio::task::spawn_blocking(move || answer.wait())
            .await
            .expect("the blocking wait does not panic"),
        Wait::Await => answer.await,
    }
}
// ANCHOR_END: hazard

/// The runtime's two workers, by name. Its other threads (the blocking pool's)
/// are called `thread-3` and so on.
const FIRST: &str = "worker-1";
const SECOND: &str = "worker-2";

/// How long the cures get to complete: far more than they need.
const CURE_LIMIT: Duration = Duration::from_secs(5);

/// How long the scenario waits for one step of the runtime's start.
const STEP_LIMIT: Duration = Duration::from_secs(5);

/// A count that threads can wait for.
#[derive(Default)]
struct Count {
    value: Mutex<u64>,
    changed: Condvar,
}

impl Count {
    fn add(&self) {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    fn get(&self) -> u64 {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the count reaches `at_least`; false if `limit` passed first.
    fn wait_for(&self, at_least: u64, limit: Duration) -> bool {
        let value = self.value.lock().unwrap_or_else(PoisonError::into_inner);
        let (value, _) = self
            .changed
            .wait_timeout_while(value, limit, |v| *v < at_least)
            .unwrap_or_else(PoisonError::into_inner);
        *value >= at_least
    }
}

/// What the scenario learns from the runtime's thread hooks.
#[derive(Default)]
struct Workers {
    /// The first worker's thread.
    first: Mutex<Option<ThreadId>>,
    /// Opened (1) once the first worker has taken the requester. Until then
    /// the second worker's thread waits before it starts, so that the same
    /// worker takes the requester in every run.
    second_may_start: Count,
    /// How many times the second worker went to park: it parks only when it
    /// has found no task to run and none to steal.
    second_parked: Count,
}

/// A multi-thread runtime with two workers, named and watched.
fn runtime(workers: &Arc<Workers>) -> tokio::runtime::Runtime {
    let next = AtomicUsize::new(1);
    let (starting, parking) = (Arc::clone(workers), Arc::clone(workers));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // The workers are the first threads the runtime starts.
        .thread_name_fn(move || match next.fetch_add(1, Ordering::Relaxed) {
            1 => FIRST.to_string(),
            2 => SECOND.to_string(),
            n => format!("thread-{n}"),
        })
        .on_thread_start(move || match thread::current().name() {
            Some(FIRST) => {
                let mut first = starting
                    .first
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *first = Some(thread::current().id());
            }
            Some(SECOND) => {
                starting.second_may_start.wait_for(1, STEP_LIMIT);
            }
            _ => {}
        })
        .on_thread_park(move || {
            if thread::current().name() == Some(SECOND) {
                parking.second_parked.add();
            }
        })
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Once the requester blocks the first worker: shows that the second worker
/// is free, by giving it a task, and that afterwards it finds nothing to run
/// or steal (it parks), although `answerer` is waiting to run.
fn show_the_idle_worker(runtime: &tokio::runtime::Runtime, workers: &Workers) {
    let first = workers
        .first
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .expect("the first worker has started");
    assert!(
        waits::wait_until_blocked(first, STEP_LIMIT),
        "the requester blocks its worker"
    );
    println!("task `requester` woke task `answerer` on `{FIRST}` and blocks it for the answer");
    assert!(
        workers.second_parked.wait_for(1, STEP_LIMIT),
        "the second worker starts and parks"
    );
    let parked = workers.second_parked.get();
    let probe = runtime.spawn(async { waits::thread_name() });
    let ran_on = runtime.block_on(probe).expect("the probe does not panic");
    assert_eq!(ran_on, SECOND, "the first worker is blocked");
    assert!(
        workers.second_parked.wait_for(parked + 1, STEP_LIMIT),
        "the second worker parks again"
    );
    println!(
        "task `probe` ran on `{ran_on}`, which then found nothing to run or steal, and parked"
    );
}

/// Runs the requester on the first worker of a two-worker runtime.
fn scenario(wait: Wait) -> Result<u32, Abandoned> {
    let workers = Arc::new(Workers::default());
    let runtime = runtime(&workers);
    let (started, has_started) = std::sync::mpsc::channel();
    let requester = runtime.spawn(async move {
        let _ = started.send(());
        requester(wait).await
    });
    has_started
        .recv_timeout(STEP_LIMIT)
        .expect("a worker takes the requester");
    workers.second_may_start.add();
    let answer = if wait == Wait::Block {
        show_the_idle_worker(&runtime, &workers);
        let first = WaitsFor::Thread(FIRST.into());
        waits::blocking("`Runtime::block_on`", first, || runtime.block_on(requester))
    } else {
        runtime.block_on(requester)
    };
    answer.expect("the requester does not panic")
}

/// The switch the program runs with.
fn wait_from_args() -> Wait {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => Wait::Block,
        Some("--block-in-place") => Wait::BlockInPlace,
        Some("--spawn-blocking") => Wait::SpawnBlocking,
        Some("--await") => Wait::Await,
        Some(other) => {
            eprintln!("unknown switch {other}: try --block-in-place, --spawn-blocking or --await");
            std::process::exit(2);
        }
    }
}

fn main() {
    let wait = wait_from_args();
    let (how, limit) = match wait {
        Wait::Block => ("by blocking its worker", DEADLOCK_LIMIT),
        Wait::BlockInPlace => ("inside `block_in_place`", CURE_LIMIT),
        Wait::SpawnBlocking => ("on a thread of `spawn_blocking`", CURE_LIMIT),
        Wait::Await => ("with `.await`", CURE_LIMIT),
    };
    println!("the requester waits for the answer {how}");
    match awd::watchdog::run("server", limit, move || scenario(wait)) {
        Ok(answer) => println!("the answer: {answer}"),
        Err(e) => println!("no answer: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn blocking_the_worker_after_a_wake_deadlocks() {
        let _limit = TestLimit::seconds(30);
        for _ in 0..3 {
            let outcome = watch("server", DEADLOCK_LIMIT, || scenario(Wait::Block));
            assert!(outcome.is_deadlock(), "{outcome:?}");
            let awd::watchdog::Outcome::Stuck { diagnosis, .. } = outcome else {
                unreachable!("a deadlock is stuck");
            };
            let blocked = format!(
                "thread `{FIRST}`, inside task `requester` after it woke task `answerer` here, \
                 is blocked in `Completion::wait`"
            );
            assert!(
                diagnosis.lines.iter().any(|l| l.starts_with(&blocked)),
                "{diagnosis}"
            );
        }
    }

    #[test]
    fn each_cure_lets_the_answerer_run() {
        let _limit = TestLimit::seconds(60);
        for _ in 0..10 {
            for wait in [Wait::BlockInPlace, Wait::SpawnBlocking, Wait::Await] {
                let outcome = watch("server", CURE_LIMIT, move || scenario(wait));
                let answer = outcome.completed().expect("completes");
                assert_eq!(answer, Ok(42), "{wait:?}");
            }
        }
    }
}
