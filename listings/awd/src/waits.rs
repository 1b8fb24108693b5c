//! Who waits for whom: what threads say before they block, what the I/O
//! thread is doing, and where each receive stands, so that a stuck program
//! can be explained instead of just stopped.
//!
//! Threads report three kinds of facts here:
//!
//! - [`blocking`] wraps a call that may block with what it waits for
//!   ([`WaitsFor`]): a receive's completion, or work that only one named
//!   thread can do. The support crate's own blocking calls do this
//!   themselves; a listing does it around calls the crate cannot see, such
//!   as `futures::executor::block_on`.
//! - [`activity`] says what a thread is in the middle of (the I/O thread
//!   running the callback of receive #1, say).
//! - The socket records every receive ([`receive_started`] and friends):
//!   pending on the I/O thread, completed at once, or delivered.
//!
//! [`diagnose`] reads the facts recorded since a moment and follows the
//! chain: thread → what it waits for → the thread that must deliver it → …
//! A chain that comes back to where it started is a deadlock; one that ends at
//! something nobody will ever deliver is a lost completion; a thread that is
//! not blocked but keeps counting [`busy`] work is spinning.
//!
//! Every fact is also kept as a timestamped [`Event`], which is what the
//! book's thread timelines are drawn from (`AWD_TIMELINE`, see
//! [`write_timeline_if_asked`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// What a blocked thread is waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitsFor {
    /// The completion of the receive with this number.
    Receive(u64),
    /// Work that only the thread with this name can do.
    Thread(String),
    /// The task with this name (see [`crate::message_loop`]) to finish.
    Task(String),
    /// The lock with this name, held by the thread with that name.
    Lock {
        /// The lock's name.
        lock: String,
        /// The thread that holds it.
        holder: String,
    },
}

impl fmt::Display for WaitsFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitsFor::Receive(id) => write!(f, "receive #{id}"),
            WaitsFor::Thread(name) => write!(f, "work that only thread `{name}` can run"),
            WaitsFor::Task(name) => write!(f, "the task `{name}` to finish"),
            WaitsFor::Lock { lock, holder } => {
                write!(f, "the lock `{lock}`, held by thread `{holder}`")
            }
        }
    }
}

/// Where a receive stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiveState {
    /// Waiting for bytes; its callback will run on this thread.
    Pending {
        /// The I/O thread that will run the callback.
        delivered_by: String,
    },
    /// It finished while being started: the result went back to the caller,
    /// and no callback will ever run.
    CompletedAtOnce,
    /// Its callback is running or has run.
    Delivered,
}

/// One recorded fact, for timelines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Time since the first event of the process.
    pub at: Duration,
    /// The thread it happened on.
    pub thread: String,
    /// What happened.
    pub what: EventKind,
}

/// The kinds of recorded facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The thread started doing this.
    Begin(String),
    /// The thread finished the innermost thing it had begun.
    End,
    /// The thread blocked, waiting for this.
    Blocked(WaitsFor),
    /// The thread stopped being blocked.
    Unblocked,
    /// Something happened at one instant.
    Mark(String),
}

struct ThreadFacts {
    id: thread::ThreadId,
    name: String,
    since: Instant,
    activities: Vec<String>,
    blocked: Option<(String, WaitsFor, Instant)>,
    busy: BTreeMap<String, u64>,
}

/// Where a task of a message loop stands.
#[derive(Clone, Debug)]
enum TaskState {
    /// Suspended: polled, returned `Pending`, not woken since. `on_receive`
    /// is the receive it started in that poll, if it started one.
    Suspended { on_receive: Option<u64> },
    /// Woken: its rest was posted to the queue of its loop's thread.
    Queued { posted_by: String },
    /// Taken from the queue and being polled.
    Running,
    /// Finished.
    Finished,
}

struct TaskFacts {
    /// The thread whose message loop runs it.
    home: String,
    state: TaskState,
}

struct ReceiveFacts {
    socket: u64,
    state: ReceiveState,
}

struct Registry {
    start: Instant,
    /// By a number each thread gets when it first records a fact, so reports
    /// list threads in the order they appeared.
    threads: BTreeMap<u64, ThreadFacts>,
    next_thread: u64,
    receives: BTreeMap<u64, ReceiveFacts>,
    tasks: BTreeMap<String, TaskFacts>,
    events: Vec<Event>,
}

/// Keeps the event log from growing without bound in long runs.
const MAX_EVENTS: usize = 10_000;

/// How many idle threads are remembered.
const MAX_THREADS: usize = 1_024;

/// How many finished receives are remembered.
const MAX_RECEIVES: usize = 4_096;

fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            Mutex::new(Registry {
                start: Instant::now(),
                threads: BTreeMap::new(),
                next_thread: 0,
                receives: BTreeMap::new(),
                tasks: BTreeMap::new(),
                events: Vec::new(),
            })
        })
        .lock()
        // Every update below is a single step, so the facts stay consistent
        // even if a thread panicked while holding the lock.
        .unwrap_or_else(PoisonError::into_inner)
}

/// The current thread's name, as the reports show it.
pub fn thread_name() -> String {
    thread::current()
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", thread::current().id()))
}

impl Registry {
    fn facts(&mut self) -> &mut ThreadFacts {
        thread_local! {
            static NUMBER: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
        }
        let number = NUMBER.with(|n| match n.get() {
            Some(number) => number,
            None => {
                self.next_thread += 1;
                n.set(Some(self.next_thread));
                self.next_thread
            }
        });
        if self.threads.len() > MAX_THREADS && !self.threads.contains_key(&number) {
            // Forget threads that are doing nothing worth explaining.
            self.threads.retain(|_, t| {
                t.blocked.is_some() || !t.activities.is_empty() || !t.busy.is_empty()
            });
        }
        self.threads.entry(number).or_insert_with(|| ThreadFacts {
            id: thread::current().id(),
            name: thread_name(),
            since: Instant::now(),
            activities: Vec::new(),
            blocked: None,
            busy: BTreeMap::new(),
        })
    }

    fn record(&mut self, what: EventKind) {
        if self.events.len() < MAX_EVENTS {
            let event = Event {
                at: self.start.elapsed(),
                thread: thread_name(),
                what,
            };
            self.events.push(event);
        }
    }
}

/// Facts are recorded once a watchdog has started watching in this process
/// (or a timeline was asked for): a program that nobody watches, such as a
/// benchmark, pays for none of this bookkeeping.
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts recording facts, for good: the watchdog calls it before it
/// starts a scenario.
pub fn start_recording() {
    RECORDING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// True when facts are being recorded.
pub fn recording() -> bool {
    static TIMELINE_ASKED: OnceLock<bool> = OnceLock::new();
    RECORDING.load(std::sync::atomic::Ordering::Relaxed)
        || *TIMELINE_ASKED.get_or_init(|| std::env::var_os("AWD_TIMELINE").is_some())
}

/// Runs `wait`, a call that may block, noting that this thread waits for
/// `waits_for` (described as `what`, e.g. "`futures::executor::block_on`").
pub fn blocking<T>(what: &str, waits_for: WaitsFor, wait: impl FnOnce() -> T) -> T {
    if !recording() {
        return wait();
    }
    {
        let mut registry = registry();
        registry.record(EventKind::Blocked(waits_for.clone()));
        registry.facts().blocked = Some((what.to_string(), waits_for, Instant::now()));
    }
    let result = wait();
    let mut registry = registry();
    registry.facts().blocked = None;
    registry.record(EventKind::Unblocked);
    result
}

/// Marks what this thread is in the middle of until the guard is dropped.
pub fn activity(what: impl Into<String>) -> Activity {
    if !recording() {
        return Activity { recorded: false };
    }
    let what = what.into();
    let mut registry = registry();
    registry.record(EventKind::Begin(what.clone()));
    registry.facts().activities.push(what);
    Activity { recorded: true }
}

/// Ends an [`activity`] when dropped.
#[must_use = "the activity ends when this guard is dropped"]
pub struct Activity {
    recorded: bool,
}

impl Drop for Activity {
    fn drop(&mut self) {
        if self.recorded {
            let mut registry = registry();
            registry.facts().activities.pop();
            registry.record(EventKind::End);
        }
    }
}

/// Records an instant on this thread's timeline.
pub fn mark(what: impl Into<String>) {
    if recording() {
        registry().record(EventKind::Mark(what.into()));
    }
}

/// Counts one more unit of `what` done by this thread: a thread that is not
/// blocked but keeps counting is busy, perhaps spinning.
pub fn busy(what: &str) {
    if !recording() {
        return;
    }
    let mut registry = registry();
    *registry.facts().busy.entry(what.to_string()).or_insert(0) += 1;
}

thread_local! {
    static LAST_STARTED_HERE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The number of the last receive this thread started: read right after
/// starting one, it is that receive's number, whatever other threads do.
pub fn last_receive_started_here() -> Option<u64> {
    LAST_STARTED_HERE.with(|last| last.get())
}

/// A new receive, numbered from 1 in each process (recorded or not).
pub fn receive_started(socket: u64) -> u64 {
    static NEXT_RECEIVE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_RECEIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    LAST_STARTED_HERE.with(|last| last.set(Some(id)));
    if !recording() {
        return id;
    }
    let mut registry = registry();
    registry.receives.insert(
        id,
        ReceiveFacts {
            socket,
            state: ReceiveState::CompletedAtOnce,
        },
    );
    while registry.receives.len() > MAX_RECEIVES {
        let oldest = *registry.receives.keys().next().expect("not empty");
        registry.receives.remove(&oldest);
    }
    id
}

/// Records where receive `id` now stands.
pub fn receive_now(id: u64, state: ReceiveState) {
    if !recording() {
        return;
    }
    let mut registry = registry();
    let mark = match &state {
        ReceiveState::Pending { .. } => format!("receive #{id} pending"),
        ReceiveState::CompletedAtOnce => format!("receive #{id} completed at once"),
        ReceiveState::Delivered => format!("receive #{id} delivered"),
    };
    registry.record(EventKind::Mark(mark));
    if let Some(facts) = registry.receives.get_mut(&id) {
        facts.state = state;
    }
}

/// Records that the task `task`, of the message loop on thread `home`,
/// returned `Pending`, having started receive `on_receive` if it did.
pub fn task_suspended(task: &str, home: &str, on_receive: Option<u64>) {
    if !recording() {
        return;
    }
    let mut registry = registry();
    let facts = registry
        .tasks
        .entry(task.to_string())
        .or_insert_with(|| TaskFacts {
            home: home.to_string(),
            state: TaskState::Running,
        });
    // A wake-up may have posted the task again while it was being polled.
    if !matches!(facts.state, TaskState::Queued { .. }) {
        facts.state = TaskState::Suspended { on_receive };
    }
    while registry.tasks.len() > MAX_RECEIVES {
        let oldest = registry.tasks.keys().next().expect("not empty").clone();
        registry.tasks.remove(&oldest);
    }
}

/// Records, on the current thread, that it posted the rest of `task` to the
/// queue of the message loop on thread `home`.
pub fn task_posted(task: &str, home: &str) {
    if !recording() {
        return;
    }
    let mut registry = registry();
    registry.record(EventKind::Mark(format!(
        "posts the rest of task `{task}` to the queue of `{home}`"
    )));
    let facts = registry
        .tasks
        .entry(task.to_string())
        .or_insert_with(|| TaskFacts {
            home: home.to_string(),
            state: TaskState::Running,
        });
    facts.state = TaskState::Queued {
        posted_by: thread_name(),
    };
}

/// Records that the loop's thread took `task` from its queue to run it.
pub fn task_taken(task: &str) {
    if !recording() {
        return;
    }
    if let Some(facts) = registry().tasks.get_mut(task) {
        facts.state = TaskState::Running;
    }
}

/// Records that `task` finished.
pub fn task_finished(task: &str) {
    if !recording() {
        return;
    }
    if let Some(facts) = registry().tasks.get_mut(task) {
        facts.state = TaskState::Finished;
    }
}

/// Waits until `thread` is blocked in a [`blocking`] call. Tests use it to
/// act only once a consumer has really suspended. False if `timeout` passed
/// first.
pub fn wait_until_blocked(thread: thread::ThreadId, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let blocked = registry()
            .threads
            .values()
            .any(|t| t.id == thread && t.blocked.is_some());
        if blocked {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// The events recorded so far.
pub fn events() -> Vec<Event> {
    registry().events.clone()
}

/// What a diagnosis concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A cycle of waits: no thread in it can ever move.
    Deadlock,
    /// A thread waits for a completion that nobody will ever deliver.
    LostCompletion,
    /// No thread is blocked, but one keeps doing the same work: a spin.
    Spinning,
    /// Stuck, with no recorded reason.
    Unexplained,
    /// Work waits in a thread pool whose threads are all busy, and the pool
    /// will add a thread: a stall that ends ([`crate::pool`]).
    Starvation,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Deadlock => "deadlock",
            Verdict::LostCompletion => "hang: a lost completion",
            Verdict::Spinning => "hang: a busy loop that never ends",
            Verdict::Unexplained => "stuck, for a reason nobody recorded",
            Verdict::Starvation => "starvation",
        })
    }
}

/// The explanation of a stuck program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// The conclusion.
    pub verdict: Verdict,
    /// One line per fact, then the conclusion, as a reader sees them.
    pub lines: Vec<String>,
}

/// Where a report's lines are wrapped, so that they read in a terminal.
const REPORT_WIDTH: usize = 78;

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            let mut current = String::from("  ");
            for word in line.split(' ') {
                if current.trim().is_empty() || current.len() + 1 + word.len() <= REPORT_WIDTH {
                    if !current.trim().is_empty() {
                        current.push(' ');
                    }
                    current.push_str(word);
                } else {
                    writeln!(f, "{current}")?;
                    current = format!("      {word}");
                }
            }
            writeln!(f, "{current}")?;
        }
        Ok(())
    }
}

/// Busy work counted fewer times than this is not called a spin.
const SPIN_THRESHOLD: u64 = 1_000;

/// Explains why nothing finished, from the facts recorded since `since`
/// (older facts belong to earlier scenarios of the same process).
pub fn diagnose(since: Instant) -> Diagnosis {
    // Read before the records are locked: a pool records into them while it
    // holds its own lock.
    let starving = crate::pool::starving_pools();
    let registry = registry();
    let threads: Vec<&ThreadFacts> = registry
        .threads
        .values()
        .filter(|t| t.since >= since || t.blocked.as_ref().is_some_and(|b| b.2 >= since))
        .collect();
    let blocked_by_name = |name: &str| {
        threads
            .iter()
            .find(|t| t.name == name && t.blocked.as_ref().is_some_and(|b| b.2 >= since))
    };
    let mut lines = Vec::new();
    let mut verdict = None;
    let mut by_name = threads.clone();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    for thread in &by_name {
        let Some((what, waits_for, at)) = &thread.blocked else {
            continue;
        };
        if *at < since {
            continue;
        }
        let inside = if thread.activities.is_empty() {
            String::new()
        } else {
            format!(", inside {},", thread.activities.join(" → "))
        };
        lines.push(format!(
            "thread `{}`{inside} is blocked in {what}, waiting for {waits_for}",
            thread.name
        ));
    }
    // Follow each blocked thread's chain of waits.
    for start in &threads {
        if start.blocked.as_ref().is_none_or(|b| b.2 < since) {
            continue;
        }
        let mut chain = vec![start.name.clone()];
        let mut current = *start;
        loop {
            let (_, waits_for, _) = current.blocked.as_ref().expect("blocked");
            // A task stands for what it waits for in turn.
            let task_waits_for;
            let waits_for = match waits_for {
                WaitsFor::Task(name) => match registry.tasks.get(name) {
                    Some(TaskFacts {
                        home,
                        state: TaskState::Queued { posted_by },
                    }) => {
                        let line = format!(
                            "the rest of task `{name}` was posted to the message queue of \
                             thread `{home}` by thread `{posted_by}`, and waits there: only \
                             thread `{home}` runs that queue"
                        );
                        if !lines.contains(&line) {
                            lines.push(line);
                        }
                        task_waits_for = WaitsFor::Thread(home.clone());
                        &task_waits_for
                    }
                    Some(TaskFacts {
                        state:
                            TaskState::Suspended {
                                on_receive: Some(id),
                            },
                        ..
                    }) => {
                        let line = format!(
                            "task `{name}` is suspended on receive #{id}; its waker will \
                             post the rest to its message loop"
                        );
                        if !lines.contains(&line) {
                            lines.push(line);
                        }
                        task_waits_for = WaitsFor::Receive(*id);
                        &task_waits_for
                    }
                    Some(TaskFacts {
                        home,
                        state: TaskState::Suspended { on_receive: None },
                    }) => {
                        let line = format!(
                            "task `{name}` is suspended on no receive of the callback \
                             socket: what can wake it (tokio's I/O driver and timers on \
                             its loop) runs only when thread `{home}` runs its loop"
                        );
                        if !lines.contains(&line) {
                            lines.push(line);
                        }
                        task_waits_for = WaitsFor::Thread(home.clone());
                        &task_waits_for
                    }
                    Some(TaskFacts {
                        home,
                        state: TaskState::Running,
                    }) => {
                        task_waits_for = WaitsFor::Thread(home.clone());
                        &task_waits_for
                    }
                    Some(TaskFacts {
                        state: TaskState::Finished,
                        ..
                    })
                    | None => break,
                },
                other => other,
            };
            let next = match waits_for {
                WaitsFor::Receive(id) => match registry.receives.get(id) {
                    Some(ReceiveFacts {
                        state: ReceiveState::Pending { delivered_by },
                        socket,
                        ..
                    }) => {
                        let line = format!(
                            "receive #{id} (socket {socket}) is pending: only thread \
                             `{delivered_by}` can run its callback"
                        );
                        if !lines.contains(&line) {
                            lines.push(line);
                        }
                        delivered_by.clone()
                    }
                    Some(ReceiveFacts {
                        state: ReceiveState::CompletedAtOnce,
                        socket,
                        ..
                    }) => {
                        lines.push(format!(
                            "receive #{id} (socket {socket}) completed at once: its result \
                             went back to the code that started it, and no callback will \
                             ever run"
                        ));
                        lines.push(format!(
                            "=> thread `{}` waits for a completion that was already delivered \
                             and dropped: a lost completion",
                            chain[0]
                        ));
                        verdict.get_or_insert(Verdict::LostCompletion);
                        break;
                    }
                    Some(ReceiveFacts {
                        state: ReceiveState::Delivered,
                        ..
                    }) => {
                        let line = format!(
                            "receive #{id}'s callback has run, yet thread `{}` still waits \
                             for it: whatever the callback handed the result to has not \
                             delivered it (work queued behind a blocked thread, or a lost \
                             wake-up)",
                            current.name
                        );
                        if !lines.contains(&line) {
                            lines.push(line);
                        }
                        break;
                    }
                    None => break,
                },
                WaitsFor::Thread(name) => name.clone(),
                WaitsFor::Task(_) => break,
                WaitsFor::Lock { holder, .. } => holder.clone(),
            };
            if let Some(at) = chain.iter().position(|n| *n == next) {
                let mut cycle = chain[at..].to_vec();
                cycle.push(next.clone());
                let arrows = cycle
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" → ");
                let line = format!("=> a cycle: {arrows}. None of them can move: a deadlock");
                if !lines.contains(&line) {
                    lines.push(line);
                }
                verdict = Some(Verdict::Deadlock);
                break;
            }
            chain.push(next.clone());
            match blocked_by_name(&next) {
                Some(thread) => current = thread,
                None => break,
            }
        }
    }
    if verdict.is_none() {
        // Only pools whose busy threads are blocked in this scenario: another
        // scenario's pool is none of this one's business.
        let blocked_here = |name: &String| blocked_by_name(name).is_some();
        for pool in starving.iter().filter(|p| p.busy.iter().any(blocked_here)) {
            let threads = pool
                .busy
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            lines.push(format!(
                "pool `{}` has {} work item(s) queued, and every thread it has is busy: \
                 {threads}",
                pool.pool, pool.queued
            ));
            if pool.can_grow {
                lines.push(format!(
                    "=> starvation: the queued work waits for a thread; pool `{}` adds one \
                     once nothing has been dequeued for {} ms",
                    pool.pool,
                    crate::pool::GATE_PERIOD.as_millis()
                ));
                verdict.get_or_insert(Verdict::Starvation);
            } else {
                lines.push(format!(
                    "=> pool `{}` is at its maximum of {} threads and adds none: the queued \
                     work never runs, a deadlock",
                    pool.pool, pool.max_threads
                ));
                verdict = Some(Verdict::Deadlock);
            }
        }
    }
    if verdict.is_none() {
        for thread in &threads {
            if thread.blocked.is_none() {
                for (what, count) in &thread.busy {
                    if *count >= SPIN_THRESHOLD {
                        lines.push(format!(
                            "thread `{}` is not blocked, but it has done `{what}` more than \
                             {SPIN_THRESHOLD} times: a busy loop",
                            thread.name
                        ));
                        verdict = Some(Verdict::Spinning);
                    }
                }
            }
        }
    }
    if lines.is_empty() {
        lines.push("no thread recorded what it is waiting for".to_string());
    }
    Diagnosis {
        verdict: verdict.unwrap_or(Verdict::Unexplained),
        lines,
    }
}

/// When the environment variable `AWD_TIMELINE` names a file, writes every
/// recorded event there, one per line: microseconds, thread, event. The
/// book's timeline figures are drawn from these files.
pub fn write_timeline_if_asked() {
    let Some(path) = std::env::var_os("AWD_TIMELINE") else {
        return;
    };
    let mut text = String::new();
    for event in events() {
        let what = match &event.what {
            EventKind::Begin(what) => format!("begin\t{what}"),
            EventKind::End => "end".to_string(),
            EventKind::Blocked(waits_for) => format!("blocked\t{waits_for}"),
            EventKind::Unblocked => "unblocked".to_string(),
            EventKind::Mark(what) => format!("mark\t{what}"),
        };
        text.push_str(&format!(
            "{}\t{}\t{what}\n",
            event.at.as_micros(),
            event.thread
        ));
    }
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!(
            "cannot write the timeline to {}: {e}",
            path.to_string_lossy()
        );
    }
}

/// A mutex that tells the watchdog who holds it: a thread that has to wait
/// for it is recorded as waiting for the holder, so a thread that waits for a
/// lock it holds itself shows up as a cycle.
pub struct WatchedMutex<T> {
    name: &'static str,
    holder: Mutex<Option<String>>,
    inner: Mutex<T>,
}

impl<T> WatchedMutex<T> {
    /// A mutex named `name` in reports.
    pub const fn new(name: &'static str, value: T) -> WatchedMutex<T> {
        WatchedMutex {
            name,
            holder: Mutex::new(None),
            inner: Mutex::new(value),
        }
    }

    /// Locks it, blocking while another thread (or this one!) holds it. A
    /// thread that locks a mutex it already holds never returns: the standard
    /// library says such a call "might panic or deadlock", and on Linux it
    /// deadlocks.
    pub fn lock(&self) -> WatchedGuard<'_, T> {
        let guard = match self.inner.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let holder = self
                    .holder
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_else(|| "unknown".to_string());
                let waits_for = WaitsFor::Lock {
                    lock: self.name.to_string(),
                    holder,
                };
                blocking(&format!("`{}.lock()`", self.name), waits_for, || {
                    self.inner.lock().unwrap_or_else(PoisonError::into_inner)
                })
            }
        };
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread_name());
        WatchedGuard {
            holder: &self.holder,
            guard,
        }
    }
}

/// The lock of a [`WatchedMutex`]; unlocks when dropped.
pub struct WatchedGuard<'a, T> {
    holder: &'a Mutex<Option<String>>,
    guard: MutexGuard<'a, T>,
}

impl<T> std::ops::Deref for WatchedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for WatchedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for WatchedGuard<'_, T> {
    fn drop(&mut self) {
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
