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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::pool::Starving;

pub mod timeline;

pub use timeline::{Event, EventKind, WaitsFor};

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

/// What a blocked thread said before it blocked.
struct Blocked {
    /// The call it is blocked in, as a report names it (``"`Completion::wait`"``).
    call: String,
    /// What it waits for.
    waits_for: WaitsFor,
    /// When it blocked.
    since: Instant,
}

struct ThreadFacts {
    id: thread::ThreadId,
    name: String,
    since: Instant,
    activities: Vec<String>,
    blocked: Option<Blocked>,
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

/// Everything recorded, behind one lock ([`facts`]).
struct Facts {
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

/// The recorded facts, locked. A leaf lock: while it is held, no other lock
/// is taken (see the `# Locks` section of [`crate::socket`]).
fn facts() -> MutexGuard<'static, Facts> {
    static FACTS: OnceLock<Mutex<Facts>> = OnceLock::new();
    FACTS
        .get_or_init(|| {
            Mutex::new(Facts {
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

impl Facts {
    /// The current thread's facts, made on its first record.
    fn this_thread(&mut self) -> &mut ThreadFacts {
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
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Starts recording facts, for good: the watchdog calls it before it
/// starts a scenario.
pub fn start_recording() {
    RECORDING.store(true, Ordering::SeqCst);
}

/// True when facts are being recorded.
pub fn recording() -> bool {
    static TIMELINE_ASKED: OnceLock<bool> = OnceLock::new();
    RECORDING.load(Ordering::Relaxed)
        || *TIMELINE_ASKED.get_or_init(|| std::env::var_os("AWD_TIMELINE").is_some())
}

/// Runs `wait`, a call that may block, noting that this thread waits for
/// `waits_for` (described as `what`, e.g. "`futures::executor::block_on`").
pub fn blocking<T>(what: &str, waits_for: WaitsFor, wait: impl FnOnce() -> T) -> T {
    if !recording() {
        return wait();
    }
    {
        let mut facts = facts();
        facts.record(EventKind::Blocked(waits_for.clone()));
        facts.this_thread().blocked = Some(Blocked {
            call: what.to_string(),
            waits_for,
            since: Instant::now(),
        });
    }
    let result = wait();
    let mut facts = facts();
    facts.this_thread().blocked = None;
    facts.record(EventKind::Unblocked);
    result
}

/// Marks what this thread is in the middle of until the guard is dropped.
pub fn activity(what: impl Into<String>) -> Activity {
    if !recording() {
        return Activity { recorded: false };
    }
    let what = what.into();
    let mut facts = facts();
    facts.record(EventKind::Begin(what.clone()));
    facts.this_thread().activities.push(what);
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
            let mut facts = facts();
            facts.this_thread().activities.pop();
            facts.record(EventKind::End);
        }
    }
}

/// Records an instant on this thread's timeline.
pub fn mark(what: impl Into<String>) {
    if recording() {
        facts().record(EventKind::Mark(what.into()));
    }
}

/// Counts one more unit of `what` done by this thread: a thread that is not
/// blocked but keeps counting is busy, perhaps spinning.
pub fn busy(what: &str) {
    if !recording() {
        return;
    }
    let mut facts = facts();
    *facts
        .this_thread()
        .busy
        .entry(what.to_string())
        .or_insert(0) += 1;
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
    static NEXT_RECEIVE: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_RECEIVE.fetch_add(1, Ordering::Relaxed);
    LAST_STARTED_HERE.with(|last| last.set(Some(id)));
    if !recording() {
        return id;
    }
    let mut facts = facts();
    facts.receives.insert(
        id,
        ReceiveFacts {
            socket,
            state: ReceiveState::CompletedAtOnce,
        },
    );
    while facts.receives.len() > MAX_RECEIVES {
        let oldest = *facts.receives.keys().next().expect("not empty");
        facts.receives.remove(&oldest);
    }
    id
}

/// Records where receive `id` now stands.
pub fn receive_now(id: u64, state: ReceiveState) {
    if !recording() {
        return;
    }
    let mut facts = facts();
    let mark = match &state {
        ReceiveState::Pending { .. } => format!("receive #{id} pending"),
        ReceiveState::CompletedAtOnce => format!("receive #{id} completed at once"),
        ReceiveState::Delivered => format!("receive #{id} delivered"),
    };
    facts.record(EventKind::Mark(mark));
    if let Some(receive) = facts.receives.get_mut(&id) {
        receive.state = state;
    }
}

impl Facts {
    /// The facts of `task`, of the message loop on thread `home`; a task
    /// first seen is taken to be running.
    fn task(&mut self, task: &str, home: &str) -> &mut TaskFacts {
        self.tasks
            .entry(task.to_string())
            .or_insert_with(|| TaskFacts {
                home: home.to_string(),
                state: TaskState::Running,
            })
    }
}

/// Records that the task `task`, of the message loop on thread `home`,
/// returned `Pending`, having started receive `on_receive` if it did.
pub fn task_suspended(task: &str, home: &str, on_receive: Option<u64>) {
    if !recording() {
        return;
    }
    let mut facts = facts();
    let task_facts = facts.task(task, home);
    // A wake-up may have posted the task again while it was being polled.
    if !matches!(task_facts.state, TaskState::Queued { .. }) {
        task_facts.state = TaskState::Suspended { on_receive };
    }
    while facts.tasks.len() > MAX_RECEIVES {
        let oldest = facts.tasks.keys().next().expect("not empty").clone();
        facts.tasks.remove(&oldest);
    }
}

/// Records, on the current thread, that it posted the rest of `task` to the
/// queue of the message loop on thread `home`.
pub fn task_posted(task: &str, home: &str) {
    if !recording() {
        return;
    }
    let mut facts = facts();
    facts.record(EventKind::Mark(format!(
        "posts the rest of task `{task}` to the queue of `{home}`"
    )));
    facts.task(task, home).state = TaskState::Queued {
        posted_by: thread_name(),
    };
}

/// Records that the loop's thread took `task` from its queue to run it.
pub fn task_taken(task: &str) {
    if !recording() {
        return;
    }
    if let Some(task_facts) = facts().tasks.get_mut(task) {
        task_facts.state = TaskState::Running;
    }
}

/// Records that `task` finished.
pub fn task_finished(task: &str) {
    if !recording() {
        return;
    }
    if let Some(task_facts) = facts().tasks.get_mut(task) {
        task_facts.state = TaskState::Finished;
    }
}

/// Waits until `thread` is blocked in a [`blocking`] call. Tests use it to
/// act only once a consumer has really suspended. False if `timeout` passed
/// first.
pub fn wait_until_blocked(thread: thread::ThreadId, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let blocked = facts()
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
    facts().events.clone()
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

/// Where following one blocked thread's chain of waits ended, and so what
/// [`diagnose`] concludes from it (as tokio's `TransitionToRunning` names
/// what a transition came to, for its caller to act on).
#[must_use]
#[derive(Debug)]
enum ChainEnd {
    /// Back at a thread already in the chain: the threads of the cycle, in
    /// order, the first one again at the end. A deadlock.
    Cycle(Vec<String>),
    /// At a receive that completed at once, so that no callback will ever
    /// deliver it: a lost completion, which `waiter` (the chain's first
    /// thread) waits for.
    LostCompletion {
        /// The receive.
        receive: u64,
        /// Its socket.
        socket: u64,
        /// The thread the chain started at.
        waiter: String,
    },
    /// At a receive whose callback has run, while `waiter` still waits for
    /// it: what the callback handed the result to has not delivered it.
    DeliveredYetWaiting {
        /// The receive.
        receive: u64,
        /// The thread that still waits for it.
        waiter: String,
    },
    /// At a thread that is not blocked, a finished task, or something
    /// nobody recorded: nothing to conclude from this chain.
    Unknown,
}

/// Adds `line` to a report unless it says so already: several chains may
/// pass through the same fact.
fn push_once(lines: &mut Vec<String>, line: String) {
    if !lines.contains(&line) {
        lines.push(line);
    }
}

/// The facts one diagnosis reads: the threads that recorded something since
/// its scenario started.
struct Scene<'a> {
    facts: &'a Facts,
    /// In the order the threads first recorded a fact.
    threads: Vec<&'a ThreadFacts>,
    since: Instant,
}

impl<'a> Scene<'a> {
    fn new(facts: &'a Facts, since: Instant) -> Scene<'a> {
        let threads = facts
            .threads
            .values()
            .filter(|t| t.since >= since || t.blocked.as_ref().is_some_and(|b| b.since >= since))
            .collect();
        Scene {
            facts,
            threads,
            since,
        }
    }

    /// What `thread` is blocked in, if it blocked in this scenario.
    fn blocked(&self, thread: &'a ThreadFacts) -> Option<&'a Blocked> {
        thread.blocked.as_ref().filter(|b| b.since >= self.since)
    }

    /// The thread named `name`, if it is blocked in this scenario.
    fn blocked_by_name(&self, name: &str) -> Option<&'a ThreadFacts> {
        self.threads
            .iter()
            .copied()
            .find(|t| t.name == name && self.blocked(t).is_some())
    }

    /// One line per blocked thread, by name: where it is blocked, inside
    /// what, and for what.
    fn blocked_lines(&self, lines: &mut Vec<String>) {
        let mut by_name = self.threads.clone();
        by_name.sort_by(|a, b| a.name.cmp(&b.name));
        for thread in by_name {
            let Some(Blocked {
                call, waits_for, ..
            }) = self.blocked(thread)
            else {
                continue;
            };
            let inside = if thread.activities.is_empty() {
                String::new()
            } else {
                format!(", inside {},", thread.activities.join(" → "))
            };
            lines.push(format!(
                "thread `{}`{inside} is blocked in {call}, waiting for {waits_for}",
                thread.name
            ));
        }
    }

    /// What waiting for the task `name` comes to: the thread or the receive
    /// it waits for in turn, with the fact that says so added to `lines`.
    /// `None` when it waits for nothing recorded (it finished, or was never
    /// seen).
    fn through_task(&self, name: &str, lines: &mut Vec<String>) -> Option<WaitsFor> {
        let task = self.facts.tasks.get(name)?;
        let home = &task.home;
        match &task.state {
            TaskState::Queued { posted_by } => {
                push_once(
                    lines,
                    format!(
                        "the rest of task `{name}` was posted to the message queue of \
                         thread `{home}` by thread `{posted_by}`, and waits there: only \
                         thread `{home}` runs that queue"
                    ),
                );
                Some(WaitsFor::Thread(home.clone()))
            }
            TaskState::Suspended {
                on_receive: Some(id),
            } => {
                push_once(
                    lines,
                    format!(
                        "task `{name}` is suspended on receive #{id}; its waker will \
                         post the rest to its message loop"
                    ),
                );
                Some(WaitsFor::Receive(*id))
            }
            TaskState::Suspended { on_receive: None } => {
                push_once(
                    lines,
                    format!(
                        "task `{name}` is suspended on no receive of the callback \
                         socket: what can wake it (tokio's I/O driver and timers on \
                         its loop) runs only when thread `{home}` runs its loop"
                    ),
                );
                Some(WaitsFor::Thread(home.clone()))
            }
            TaskState::Running => Some(WaitsFor::Thread(home.clone())),
            TaskState::Finished => None,
        }
    }

    /// The thread that must deliver receive `id`, with the fact that says so
    /// added to `lines`; or, if no thread will, where the chain ends.
    fn through_receive(
        &self,
        id: u64,
        chain: &[String],
        current: &ThreadFacts,
        lines: &mut Vec<String>,
    ) -> Result<String, ChainEnd> {
        match self.facts.receives.get(&id) {
            Some(ReceiveFacts {
                state: ReceiveState::Pending { delivered_by },
                socket,
            }) => {
                push_once(
                    lines,
                    format!(
                        "receive #{id} (socket {socket}) is pending: only thread \
                         `{delivered_by}` can run its callback"
                    ),
                );
                Ok(delivered_by.clone())
            }
            Some(ReceiveFacts {
                state: ReceiveState::CompletedAtOnce,
                socket,
            }) => Err(ChainEnd::LostCompletion {
                receive: id,
                socket: *socket,
                waiter: chain[0].clone(),
            }),
            Some(ReceiveFacts {
                state: ReceiveState::Delivered,
                ..
            }) => Err(ChainEnd::DeliveredYetWaiting {
                receive: id,
                waiter: current.name.clone(),
            }),
            None => Err(ChainEnd::Unknown),
        }
    }

    /// Follows `start`'s chain of waits: thread → what it waits for → the
    /// thread that must deliver it → …, adding each fact passed on the way
    /// to `lines`, until the chain comes back on itself or ends.
    fn follow(&self, start: &'a ThreadFacts, lines: &mut Vec<String>) -> ChainEnd {
        let mut chain = vec![start.name.clone()];
        let mut current = start;
        loop {
            let Some(blocked) = current.blocked.as_ref() else {
                return ChainEnd::Unknown;
            };
            // A task stands for what it waits for in turn.
            let waits_for = match &blocked.waits_for {
                WaitsFor::Task(name) => match self.through_task(name, lines) {
                    Some(waits_for) => waits_for,
                    None => return ChainEnd::Unknown,
                },
                other => other.clone(),
            };
            let next = match waits_for {
                WaitsFor::Receive(id) => match self.through_receive(id, &chain, current, lines) {
                    Ok(thread) => thread,
                    Err(end) => return end,
                },
                WaitsFor::Thread(name) => name,
                WaitsFor::Task(_) => return ChainEnd::Unknown,
                WaitsFor::Lock { holder, .. } => holder,
            };
            if let Some(at) = chain.iter().position(|n| *n == next) {
                let mut cycle = chain.split_off(at);
                cycle.push(next);
                return ChainEnd::Cycle(cycle);
            }
            chain.push(next.clone());
            match self.blocked_by_name(&next) {
                Some(thread) => current = thread,
                None => return ChainEnd::Unknown,
            }
        }
    }
}

/// Explains why nothing finished, from the facts recorded since `since`
/// (older facts belong to earlier scenarios of the same process).
pub fn diagnose(since: Instant) -> Diagnosis {
    // Read before the facts are locked: a pool records facts while it holds
    // its own lock, so this order is the only one (see `crate::socket`'s
    // `# Locks`).
    let starving = crate::pool::starving_pools();
    let facts = facts();
    let scene = Scene::new(&facts, since);
    let mut lines = Vec::new();
    let mut verdict = None;
    scene.blocked_lines(&mut lines);
    // A cycle is found once from each thread in it; it is reported once.
    let mut cycles_reported: Vec<Vec<String>> = Vec::new();
    for start in &scene.threads {
        if scene.blocked(start).is_none() {
            continue;
        }
        match scene.follow(start, &mut lines) {
            ChainEnd::Cycle(cycle) => {
                let mut members = cycle[..cycle.len().saturating_sub(1)].to_vec();
                members.sort();
                if cycles_reported.contains(&members) {
                    verdict = Some(Verdict::Deadlock);
                    continue;
                }
                cycles_reported.push(members);
                let arrows = cycle
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" → ");
                push_once(
                    &mut lines,
                    format!("=> a cycle: {arrows}. None of them can move: a deadlock"),
                );
                verdict = Some(Verdict::Deadlock);
            }
            ChainEnd::LostCompletion {
                receive,
                socket,
                waiter,
            } => {
                lines.push(format!(
                    "receive #{receive} (socket {socket}) completed at once: its result \
                     went back to the code that started it, and no callback will \
                     ever run"
                ));
                lines.push(format!(
                    "=> thread `{waiter}` waits for a completion that was already delivered \
                     and dropped: a lost completion"
                ));
                verdict.get_or_insert(Verdict::LostCompletion);
            }
            ChainEnd::DeliveredYetWaiting { receive, waiter } => push_once(
                &mut lines,
                format!(
                    "receive #{receive}'s callback has run, yet thread `{waiter}` still waits \
                     for it: whatever the callback handed the result to has not \
                     delivered it (work queued behind a blocked thread, or a lost \
                     wake-up)"
                ),
            ),
            ChainEnd::Unknown => {}
        }
    }
    if verdict.is_none() {
        verdict = starvation(&scene, &starving, &mut lines);
    }
    if verdict.is_none() {
        verdict = spinning(&scene, &mut lines);
    }
    if lines.is_empty() {
        lines.push("no thread recorded what it is waiting for".to_string());
    }
    Diagnosis {
        verdict: verdict.unwrap_or(Verdict::Unexplained),
        lines,
    }
}

/// The pools whose busy threads are blocked in this scenario, with work
/// queued behind them: a starvation if they can grow, a deadlock if not.
/// Another scenario's pool is none of this one's business.
fn starvation(
    scene: &Scene<'_>,
    starving: &[Starving],
    lines: &mut Vec<String>,
) -> Option<Verdict> {
    let mut verdict = None;
    let blocked_here = |name: &String| scene.blocked_by_name(name).is_some();
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
    verdict
}

/// Threads that are not blocked but keep counting the same [`busy`] work.
fn spinning(scene: &Scene<'_>, lines: &mut Vec<String>) -> Option<Verdict> {
    let mut verdict = None;
    for thread in scene.threads.iter().filter(|t| t.blocked.is_none()) {
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
    verdict
}

/// When the environment variable `AWD_TIMELINE` names a file, writes every
/// recorded event there, one line each, in the format [`timeline`] defines.
/// The book's timeline figures are drawn from these files.
pub fn write_timeline_if_asked() {
    let Some(path) = std::env::var_os("AWD_TIMELINE") else {
        return;
    };
    if let Err(e) = std::fs::write(&path, timeline::write(&events())) {
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
