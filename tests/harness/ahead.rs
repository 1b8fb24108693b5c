//! Runs a test binary's checks ahead of libtest, several at a time.
//!
//! cargo runs one test binary after another, and libtest runs as many tests
//! of a binary at once as there are CPUs. The checks of `snippets` and
//! `outputs` mostly wait (a watchdog's 300 ms, a listing's timers), so on a
//! two-CPU machine two at a time leaves the machine idle. So the first test
//! that asks for a result starts every check libtest was asked to run on a
//! pool of [`jobs`] threads, the slowest first by the times the previous run
//! recorded; each test then waits for its own check and reports it, with its
//! output, on its own thread. Tests whose checks are identical (two blocks
//! that expand to the same program) share one run.
//!
//! The pool reads libtest's filters (`-- name`, `--exact`, `--skip`) from the
//! command line, so that `cargo test --test outputs -- ch03` runs only
//! chapter 3's checks. A check the pool did not take (an option it does not
//! know turns it off) runs on its test's thread, exactly as it would in the
//! pool.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What one check found.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It passed; what it printed.
    Passed(String),
    /// It failed: why, with what it printed.
    Failed(String),
    /// This machine cannot run it: why.
    Skipped(String),
    /// Run it again on the test's own thread: the check printed there what
    /// matters (a compiler's diagnostics), which only the test's thread shows
    /// with the test.
    OnTestThread,
}

/// One check, given its key; `true` when it runs on its test's own thread.
pub type Check = fn(&str, bool) -> Outcome;

/// How many checks run at once: `BOOK_TEST_JOBS`, else twice the CPUs, at
/// least 4 and at most 8 (the checks mostly wait; the two CPU-bound ones,
/// the load tests, start first).
pub fn jobs() -> usize {
    std::env::var("BOOK_TEST_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            (2 * cpus).clamp(4, 8)
        })
}

/// A short, stable name for a check's key (its program or its path).
pub fn id(key: &str) -> String {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The tests libtest will run, from the arguments it was given; `None` when
/// an argument is not one of the few this understands (`--list`,
/// `--ignored`, …): then nothing runs ahead.
pub fn selected<'a>(names: &[&'a str], args: &[String]) -> Option<Vec<&'a str>> {
    let (mut filters, mut skips, mut exact) = (Vec::new(), Vec::new(), false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" => exact = true,
            "--skip" => skips.push(args.next()?.clone()),
            "--test-threads" | "--color" | "--format" | "-Z" | "--logfile" => {
                args.next()?;
            }
            "--nocapture" | "--no-capture" | "--show-output" | "-q" | "--quiet" | "--test"
            | "--include-ignored" => {}
            other => {
                if let Some(skip) = other.strip_prefix("--skip=") {
                    skips.push(skip.to_string());
                } else if ["--test-threads=", "--color=", "--format="]
                    .iter()
                    .any(|p| other.starts_with(p))
                {
                } else if other.starts_with('-') {
                    return None;
                } else {
                    filters.push(other.to_string());
                }
            }
        }
    }
    let matches = |name: &str, pattern: &String| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern.as_str())
        }
    };
    Some(
        names
            .iter()
            .copied()
            .filter(|name| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
            .filter(|name| !skips.iter().any(|s| matches(name, s)))
            .collect(),
    )
}

/// The checks of one test binary, run ahead.
pub struct Ahead {
    /// Each test's check, by key.
    keys: HashMap<&'static str, String>,
    /// The first test (in name order) of each key, for tests that share one.
    first: HashMap<String, &'static str>,
    /// The keys the pool took.
    taken: HashSet<String>,
    results: Mutex<HashMap<String, Outcome>>,
    finished: Condvar,
}

impl Ahead {
    /// Starts the pool for `checks` (test name, key), once per process;
    /// `run` does one check. `label` names the binary's record of how long
    /// each check took (in `target/<profile>/`).
    pub fn start(
        label: &str,
        checks: impl FnOnce() -> Vec<(&'static str, String)>,
        run: Check,
    ) -> Arc<Ahead> {
        static STARTED: OnceLock<Arc<Ahead>> = OnceLock::new();
        Arc::clone(STARTED.get_or_init(|| Ahead::new(label, checks(), run)))
    }

    fn new(label: &str, checks: Vec<(&'static str, String)>, run: Check) -> Arc<Ahead> {
        let mut names: Vec<&'static str> = checks.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        let keys: HashMap<&'static str, String> = checks.into_iter().collect();
        let mut first = HashMap::new();
        for name in &names {
            first.entry(keys[name].clone()).or_insert(*name);
        }
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut queue: Vec<String> = Vec::new();
        if let Some(chosen) = selected(&names, &args) {
            for name in chosen {
                if !queue.contains(&keys[name]) {
                    queue.push(keys[name].clone());
                }
            }
        }
        // The slowest first, so that the longest check does not start last.
        let times = Times::load(label);
        queue.sort_by(|a, b| times.of(b).total_cmp(&times.of(a)));
        let ahead = Arc::new(Ahead {
            keys,
            first,
            taken: queue.iter().cloned().collect(),
            results: Mutex::new(HashMap::new()),
            finished: Condvar::new(),
        });
        let queue = Arc::new(Mutex::new(queue.into_iter()));
        let times = Arc::new(Mutex::new(times));
        for worker in 0..jobs() {
            let (ahead, queue, times) =
                (Arc::clone(&ahead), Arc::clone(&queue), Arc::clone(&times));
            std::thread::Builder::new()
                .name(format!("book-check-{worker}"))
                .spawn(move || loop {
                    let Some(key) = queue.lock().unwrap_or_else(|e| e.into_inner()).next() else {
                        return;
                    };
                    let started = Instant::now();
                    let outcome = std::panic::catch_unwind(|| run(&key, false))
                        .unwrap_or(Outcome::OnTestThread);
                    times
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&key, started.elapsed());
                    ahead
                        .results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, outcome);
                    ahead.finished.notify_all();
                })
                .expect("a thread for the checks");
        }
        ahead
    }

    /// The outcome of test `name`'s check: the pool's, or, when the pool did
    /// not take it or asked for it, `run`'s on this thread. A test that
    /// shares its check with an earlier one says so.
    pub fn outcome(&self, name: &str, run: Check) -> Outcome {
        let key = &self.keys[name];
        let found = if self.taken.contains(key) {
            let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(outcome) = results.get(key) {
                    break outcome.clone();
                }
                results = self
                    .finished
                    .wait(results)
                    .unwrap_or_else(|e| e.into_inner());
            }
        } else {
            Outcome::OnTestThread
        };
        let found = match found {
            Outcome::OnTestThread => run(key, true),
            other => other,
        };
        let first = self.first[key];
        match found {
            Outcome::Passed(text) if first != name => {
                Outcome::Passed(format!("(the same program as {first}, run once)\n{text}"))
            }
            other => other,
        }
    }
}

/// How long each check took in the previous run, by [`id`]:
/// `target/<profile>/book-check-times-<label>.tsv`.
struct Times {
    path: PathBuf,
    seconds: HashMap<String, f64>,
}

impl Times {
    fn load(label: &str) -> Times {
        let path = super::binary_dir().join(format!("book-check-times-{label}.tsv"));
        let seconds = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (id, seconds) = line.split_once('\t')?;
                Some((id.to_string(), seconds.parse().ok()?))
            })
            .collect();
        Times { path, seconds }
    }

    fn of(&self, key: &str) -> f64 {
        self.seconds.get(&id(key)).copied().unwrap_or(0.0)
    }

    fn record(&mut self, key: &str, took: Duration) {
        self.seconds.insert(id(key), took.as_secs_f64());
        let mut lines: Vec<String> = self
            .seconds
            .iter()
            .map(|(id, s)| format!("{id}\t{s:.3}\n"))
            .collect();
        lines.sort();
        // Only a hint for the order: a lost write costs nothing.
        let tmp = self
            .path
            .with_extension(format!("{}.tmp", std::process::id()));
        if std::fs::write(&tmp, lines.concat()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}
