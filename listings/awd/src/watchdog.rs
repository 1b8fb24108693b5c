//! Bounded waiting: a deadlock becomes a report, never a frozen terminal.
//!
//! A deadlock cannot be detected from inside the threads it stops, and a
//! `tokio::time::timeout` cannot fire when the thread that drives the runtime's
//! timers is the one that is blocked. So the watchdog is a plain OS thread,
//! outside any runtime under test, that waits a bounded time for the scenario.
//! A stuck scenario thread cannot be stopped or joined; it is left behind
//! and ends with the process.
//!
//! When the time is up, the watchdog asks [`crate::waits`] who waits for
//! whom and says what it found: a deadlock (a cycle of waits), a lost
//! completion, a busy loop, or a starvation: work queued in a thread pool
//! whose threads are all busy. A starvation is a stall, not a deadlock, so
//! the watchdog then waits on, up to [`STARVATION_LIMIT`], and reports how it
//! ended: [`Outcome::Starved`] names the threads the pool added. [`run`] is what a listing calls: it prints
//! that diagnosis and ends the program with [`DEADLOCK_EXIT_CODE`] or
//! [`HANG_EXIT_CODE`]. [`watch`] is what a test calls: it returns the
//! [`Outcome`] to assert on.
//!
//! [`TestLimit`] applies the same idea to a whole test: every test in this
//! repository starts with one, so no test can hang the suite.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::waits::{self, Diagnosis, Verdict};

/// The exit status of a program that stopped because its watchdog found a
/// deadlock. The book's test harness expects exactly this status from blocks
/// marked `deadlocks`.
pub const DEADLOCK_EXIT_CODE: i32 = 3;

/// The exit status of a program that stopped because its watchdog found it
/// stuck without a deadlock: a lost completion or a busy loop. Blocks marked
/// `hangs` must end with it.
pub const HANG_EXIT_CODE: i32 = 4;

/// The exit status of a test process stopped by a [`TestLimit`].
pub const TIME_LIMIT_EXIT_CODE: i32 = 124;

/// How long a scenario that should deadlock gets before the watchdog looks:
/// the book's deadlocks are certain once set up, so a short wait cannot
/// mistake a slow run for one.
pub const DEADLOCK_LIMIT: Duration = Duration::from_millis(300);

/// How much longer the watchdog waits for a scenario it found starving
/// (a pool adds a thread every [`crate::pool::GATE_PERIOD`]).
pub const STARVATION_LIMIT: Duration = Duration::from_secs(5);

/// How much longer the watchdog waits for a scenario whose diagnosis, at
/// its limit, finds no reason it could be stuck (no cycle of waits, no lost
/// completion, no spin): such a scenario is more likely slow than stuck.
/// A deadlock, a lost completion or a spin is reported at the limit itself.
pub const UNEXPLAINED_GRACE: Duration = Duration::from_secs(5);

/// How a watched scenario ended.
#[derive(Debug)]
pub enum Outcome<T> {
    /// It returned this value in time.
    Completed(T),
    /// It returned this value late: when the limit ran out it was stalled
    /// in a starving thread pool, and it finished once the pool had added a
    /// thread.
    Starved {
        /// What it returned.
        value: T,
        /// Who waited for whom when the limit ran out.
        stalled: Diagnosis,
        /// When it finished, counted from its start.
        finished_after: Duration,
        /// The threads pools added while it ran, with when, counted from its
        /// start.
        added: Vec<(Duration, crate::pool::Injection)>,
    },
    /// It was still running when the limit ran out.
    Stuck {
        /// How long the watchdog waited.
        waited: Duration,
        /// Who waited for whom when the time was up.
        diagnosis: Diagnosis,
    },
    /// It panicked, with this message.
    Panicked(String),
}

impl<T> Outcome<T> {
    /// True when the diagnosis found a deadlock.
    pub fn is_deadlock(&self) -> bool {
        self.verdict() == Some(Verdict::Deadlock)
    }

    /// True when the scenario stalled in a starving pool and finished late.
    pub fn is_starvation(&self) -> bool {
        matches!(self, Outcome::Starved { .. })
    }

    /// The diagnosis's verdict, if the scenario got stuck.
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            Outcome::Stuck { diagnosis, .. } => Some(diagnosis.verdict),
            _ => None,
        }
    }

    /// The value, if the scenario completed (in time or late).
    pub fn completed(self) -> Option<T> {
        match self {
            Outcome::Completed(value) | Outcome::Starved { value, .. } => Some(value),
            _ => None,
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// One scenario at a time per process, so that a diagnosis never mixes the
/// threads of two scenarios.
static ONE_SCENARIO_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `scenario` on a new thread named `name` and waits at most `limit`
/// for it. A stuck scenario's threads are left where they are.
pub fn watch<T, F>(name: &str, limit: Duration, scenario: F) -> Outcome<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let _one = ONE_SCENARIO_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    waits::start_recording();
    let started = Instant::now();
    let (sender, receiver) = std::sync::mpsc::channel();
    let spawned = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario));
            let _ = sender.send(result);
        });
    if let Err(e) = spawned {
        return Outcome::Panicked(format!("could not start the scenario thread: {e}"));
    }
    match receiver.recv_timeout(limit) {
        Ok(Ok(value)) => Outcome::Completed(value),
        Ok(Err(payload)) => Outcome::Panicked(panic_message(payload.as_ref())),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let diagnosis = waits::diagnose(started);
            if diagnosis.verdict == Verdict::Unexplained {
                // No cycle, no lost completion, no spin: nothing says it is
                // stuck for good, and a busy machine can make a scenario
                // that completes outlive a short limit. Give it longer.
                return match receiver.recv_timeout(UNEXPLAINED_GRACE) {
                    Ok(Ok(value)) => Outcome::Completed(value),
                    Ok(Err(payload)) => Outcome::Panicked(panic_message(payload.as_ref())),
                    Err(_) => Outcome::Stuck {
                        waited: started.elapsed(),
                        diagnosis: waits::diagnose(started),
                    },
                };
            }
            if diagnosis.verdict != Verdict::Starvation {
                return Outcome::Stuck {
                    waited: started.elapsed(),
                    diagnosis,
                };
            }
            // A stall that a new pool thread may end: wait and see.
            match receiver.recv_timeout(STARVATION_LIMIT) {
                Ok(Ok(value)) => {
                    // Only the pools the diagnosis found starving: other
                    // threads of the process may run pools of their own.
                    let starving = |pool: &str| {
                        let named = format!("pool `{pool}` ");
                        diagnosis.lines.iter().any(|l| l.starts_with(&named))
                    };
                    let added = crate::pool::injections_since(started)
                        .into_iter()
                        .filter(|i| starving(&i.pool))
                        .map(|i| (i.at.saturating_duration_since(started), i))
                        .collect();
                    Outcome::Starved {
                        value,
                        stalled: diagnosis,
                        finished_after: started.elapsed(),
                        added,
                    }
                }
                Ok(Err(payload)) => Outcome::Panicked(panic_message(payload.as_ref())),
                Err(_) => Outcome::Stuck {
                    waited: started.elapsed(),
                    diagnosis: waits::diagnose(started),
                },
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Outcome::Panicked("the scenario thread ended without a result".to_string())
        }
    }
}

/// Runs `scenario` under a watchdog, as a listing's `main` does: returns its
/// value if it finishes within `limit`; otherwise prints who waits for whom
/// and ends the program with [`DEADLOCK_EXIT_CODE`] (a deadlock) or
/// [`HANG_EXIT_CODE`] (stuck another way). A panic in the scenario is
/// reported and ends the program with status 101, as a panic in `main` would.
pub fn run<T, F>(name: &str, limit: Duration, scenario: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let outcome = watch(name, limit, scenario);
    waits::write_timeline_if_asked();
    match outcome {
        Outcome::Completed(value) => value,
        Outcome::Starved {
            value,
            stalled,
            finished_after,
            added,
        } => {
            eprintln!(
                "watchdog: `{name}` did not finish within {} ms: {}",
                limit.as_millis(),
                stalled.verdict
            );
            eprint!("{stalled}");
            eprintln!(
                "watchdog: `{name}` finished {} ms after it started: a stall, not a deadlock",
                finished_after.as_millis()
            );
            for (after, added) in &added {
                eprintln!(
                    "  {} ms after the start, pool `{}` added thread `{}`:",
                    after.as_millis(),
                    added.pool,
                    added.thread,
                );
                eprintln!("      {}", added.why);
            }
            value
        }
        Outcome::Panicked(message) => {
            eprintln!("watchdog: `{name}` panicked: {message}");
            std::process::exit(101);
        }
        Outcome::Stuck { diagnosis, .. } => {
            eprintln!(
                "watchdog: `{name}` did not finish within {} ms: {}",
                limit.as_millis(),
                diagnosis.verdict
            );
            eprint!("{diagnosis}");
            let code = match diagnosis.verdict {
                Verdict::Deadlock | Verdict::Unexplained => DEADLOCK_EXIT_CODE,
                Verdict::LostCompletion | Verdict::Spinning | Verdict::Starvation => HANG_EXIT_CODE,
            };
            std::process::exit(code);
        }
    }
}

/// A time limit for the current test. Create one as a test's first statement;
/// if the test is still running when the limit passes, the limit names the
/// test and ends the whole test process with [`TIME_LIMIT_EXIT_CODE`]
/// (a hung thread cannot be unwound, so stopping the process is the only way
/// to give the suite back).
#[must_use = "the limit is lifted when this guard is dropped"]
pub struct TestLimit {
    finished: Arc<(Mutex<bool>, Condvar)>,
}

impl TestLimit {
    /// A limit of `seconds` seconds.
    pub fn seconds(seconds: u64) -> TestLimit {
        TestLimit::new(Duration::from_secs(seconds))
    }

    /// A limit of `limit`.
    pub fn new(limit: Duration) -> TestLimit {
        let finished = Arc::new((Mutex::new(false), Condvar::new()));
        // libtest names each test's thread after the test.
        let test = thread::current().name().unwrap_or("this test").to_string();
        let watcher = Arc::clone(&finished);
        thread::spawn(move || {
            let (lock, changed) = &*watcher;
            let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let (guard, _) = changed
                .wait_timeout_while(guard, limit, |done| !*done)
                .unwrap_or_else(PoisonError::into_inner);
            if !*guard {
                eprintln!(
                    "\n{test}: still running after its {limit:?} limit; stopping the test process"
                );
                std::process::exit(TIME_LIMIT_EXIT_CODE);
            }
        });
        TestLimit { finished }
    }
}

impl Drop for TestLimit {
    fn drop(&mut self) {
        let (lock, changed) = &*self.finished;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_scenario_is_reported_with_its_value() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("adds", Duration::from_secs(5), || 2 + 2);
        assert!(matches!(outcome, Outcome::Completed(4)), "{outcome:?}");
    }

    #[test]
    fn a_blocked_scenario_is_reported_in_time() {
        let _limit = TestLimit::seconds(10);
        let started = Instant::now();
        let outcome = watch("blocks", Duration::from_millis(200), || {
            // Waits for a message nobody will ever send.
            let (sender, never) = std::sync::mpsc::channel::<()>();
            let _ = never.recv();
            drop(sender);
        });
        assert_eq!(outcome.verdict(), Some(Verdict::Unexplained), "{outcome:?}");
        // With no reason recorded, it waits the grace as well, and no more.
        let waited = started.elapsed();
        assert!(waited >= UNEXPLAINED_GRACE, "{waited:?}");
        assert!(
            waited < UNEXPLAINED_GRACE + Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[test]
    fn a_slow_scenario_with_no_reason_to_be_stuck_is_given_time_to_finish() {
        let _limit = TestLimit::seconds(10);
        // Slower than the limit, as a busy machine can make a scenario that
        // completes: it is not reported stuck.
        let outcome = watch("slow", Duration::from_millis(100), || {
            thread::sleep(Duration::from_millis(400));
            7
        });
        assert!(matches!(outcome, Outcome::Completed(7)), "{outcome:?}");
    }

    #[test]
    fn a_starving_pool_is_reported_as_a_stall_that_ends() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("starves", Duration::from_millis(200), || {
            let pool = crate::pool::Pool::new(
                "starving",
                crate::pool::PoolConfig {
                    min_threads: 1,
                    max_threads: 2,
                    compensate_blocking_waits: false,
                    numbered_threads: true,
                },
            );
            // The pool's only thread waits for work queued behind it.
            let (sender, second_ran) = std::sync::mpsc::channel();
            let (result, first_done) = std::sync::mpsc::channel();
            let behind = pool.clone();
            pool.post(move || {
                behind.post(move || sender.send(()).unwrap());
                let waits_for = waits::WaitsFor::Thread("starving-2".into());
                let got = waits::blocking("`Receiver::recv`", waits_for, || second_ran.recv());
                result.send(got.is_ok()).unwrap();
            });
            first_done.recv().unwrap()
        });
        let Outcome::Starved {
            value,
            stalled,
            added,
            finished_after,
        } = outcome
        else {
            panic!("expected a starvation, got {outcome:?}");
        };
        assert!(value);
        assert_eq!(stalled.verdict, Verdict::Starvation, "{stalled}");
        let said = |text: &str| stalled.lines.iter().any(|l| l.contains(text));
        assert!(
            said("pool `starving` has 1 work item(s) queued"),
            "{stalled}"
        );
        assert!(
            said("every thread it has is busy: `starving-1`"),
            "{stalled}"
        );
        assert_eq!(added.len(), 1, "{added:?}");
        assert_eq!(added[0].1.thread, "starving-2");
        assert!(added[0].0 >= crate::pool::GATE_PERIOD, "{added:?}");
        assert!(finished_after >= added[0].0, "{finished_after:?} {added:?}");
    }

    #[test]
    fn a_panicking_scenario_is_reported_with_its_message() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("panics", Duration::from_secs(5), || -> () {
            panic!("boom")
        });
        assert!(
            matches!(&outcome, Outcome::Panicked(m) if m == "boom"),
            "{outcome:?}"
        );
    }
}
