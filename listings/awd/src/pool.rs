//! A thread pool that adds threads slowly, as .NET's thread pool does: the
//! model behind Listing 3-5's starvation and behind the support crate's
//! asynchronous continuations.
//!
//! What it models, from dotnet/runtime's `PortableThreadPool`:
//!
//! - Threads are started on demand up to a minimum ([`PoolConfig::min_threads`];
//!   .NET's default is the processor count: `PortableThreadPool.cs`,
//!   `_minThreads = HasForcedMinThreads ? ForcedMinWorkerThreads :
//!   (short)Environment.ProcessorCount`). `ThreadPool.SetMinThreads` raises it.
//! - Past the minimum, a *gate* thread looks every 500 ms
//!   (`PortableThreadPool.GateThread.cs`, `GateActivitiesPeriodMs = 500`) and
//!   adds one thread when work is waiting and nothing was dequeued for longer
//!   than that period (`SufficientDelaySinceLastDequeue`, the starvation
//!   gate). So a pool whose threads are all blocked recovers one thread per
//!   half second: a stall, not a deadlock, until [`PoolConfig::max_threads`].
//! - Optionally ([`PoolConfig::compensate_blocking_waits`]), .NET 6's
//!   compensation for sync-over-async (dotnet/runtime#53471,
//!   `PortableThreadPool.Blocking.cs`): a pool thread that blocks in a
//!   `Task` wait tells the pool (`NotifyThreadBlocked`), and the pool adds a
//!   replacement at once, up to the minimum plus one thread per processor
//!   (`ThreadsToAddWithoutDelay`). Here the `Task` wait is
//!   [`Completion::wait`](crate::completion_source::Completion::wait), and
//!   [`blocking_wait`] is the notification.
//!
//! What it leaves out: hill climbing (which moves the thread goal up and
//! down to maximise throughput), the CPU-utilisation test that lengthens the
//! starvation delay on a busy machine, the 25 ms delay steps of compensation
//! past `ThreadsToAddWithoutDelay` (here the starvation gate takes over
//! there), and retiring idle threads. None of them changes whether a stall
//! ends, only how soon.
//!
//! The pool tells the watchdog what it does: each thread it adds is recorded
//! (a mark on the timeline, and [`injections_since`] for reports), and
//! [`starving_pools`] says which pools have work queued and no free thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::waits;

/// How often the gate thread looks at the pool, and how long nothing must
/// have been dequeued before it adds a thread (.NET's
/// `GateActivitiesPeriodMs`).
pub const GATE_PERIOD: Duration = Duration::from_millis(500);

/// How a pool grows.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Threads started on demand, without delay.
    pub min_threads: usize,
    /// The pool never has more threads than this.
    pub max_threads: usize,
    /// Add a thread at once when a pool thread blocks in
    /// [`Completion::wait`](crate::completion_source::Completion::wait), as
    /// .NET 6 and later do for `Task` waits.
    pub compensate_blocking_waits: bool,
    /// Name threads `name-1`, `name-2`, … (so reports can tell them apart);
    /// otherwise every thread is called `name`, as .NET calls every worker
    /// `.NET TP Worker`.
    pub numbered_threads: bool,
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread the pool added past its minimum, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// The pool's name.
    pub pool: String,
    /// The new thread's name.
    pub thread: String,
    /// When it was added.
    pub at: Instant,
    /// Why: the starvation gate, or compensation for a blocked wait.
    pub why: String,
}

struct State {
    queue: VecDeque<Job>,
    /// Threads started and not ended.
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// Threads inside a compensated [`blocking_wait`].
    blocked: usize,
    /// Names of the threads that are running a work item.
    busy: Vec<String>,
    next_number: usize,
    last_dequeue: Instant,
    gate_running: bool,
    /// Every handle is gone: threads end once the queue is empty.
    closed: bool,
}

struct Inner {
    name: String,
    config: PoolConfig,
    state: Mutex<State>,
    work: Condvar,
    gate: Condvar,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single step, so the state stays consistent even
        // if a thread panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes the pool when the last [`Pool`] handle goes.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.state().closed = true;
        self.inner.work.notify_all();
        self.inner.gate.notify_all();
    }
}

/// A handle to a pool; clones share it. When the last handle is dropped, the
/// pool's threads finish the queued work and end (a blocked thread stays
/// blocked).
#[derive(Clone)]
pub struct Pool {
    handle: Arc<Handle>,
}

fn pools() -> MutexGuard<'static, Vec<Weak<Inner>>> {
    static POOLS: OnceLock<Mutex<Vec<Weak<Inner>>>> = OnceLock::new();
    POOLS
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn injections() -> MutexGuard<'static, Vec<Injection>> {
    static INJECTIONS: Mutex<Vec<Injection>> = Mutex::new(Vec::new());
    INJECTIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How many injections are remembered.
const MAX_INJECTIONS: usize = 1_024;

thread_local! {
    /// The pool this thread belongs to, if it is a pool thread.
    static CURRENT: std::cell::RefCell<Option<Weak<Inner>>> = const { std::cell::RefCell::new(None) };
}

impl Pool {
    /// A pool named `name`; no thread starts until work is posted.
    pub fn new(name: &str, config: PoolConfig) -> Pool {
        assert!(
            config.min_threads >= 1 && config.max_threads >= config.min_threads,
            "a pool needs 1 <= min_threads <= max_threads"
        );
        let inner = Arc::new(Inner {
            name: name.to_string(),
            config,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                blocked: 0,
                busy: Vec::new(),
                next_number: 1,
                last_dequeue: Instant::now(),
                gate_running: false,
                closed: false,
            }),
            work: Condvar::new(),
            gate: Condvar::new(),
        });
        let mut registered = pools();
        registered.retain(|p| p.strong_count() > 0);
        registered.push(Arc::downgrade(&inner));
        Pool {
            handle: Arc::new(Handle { inner }),
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.handle.inner.name
    }

    /// Queues `job`; it runs on a pool thread. A free thread takes it at
    /// once; below the minimum a new thread starts for it; otherwise it waits
    /// for a thread to finish, or for the gate to add one.
    pub fn post(&self, job: impl FnOnce() + Send + 'static) {
        let inner = &self.handle.inner;
        let mut state = inner.state();
        state.queue.push_back(Box::new(job));
        // An idle thread counts as idle until it has woken and taken the
        // lock again, so jobs posted back to back would all count the same
        // one: a thread is free for this job only if the queue, this job
        // included, holds no more jobs than there are idle threads.
        if state.queue.len() <= state.idle {
            drop(state);
            inner.work.notify_one();
        } else if state.threads < inner.config.min_threads {
            start_thread(inner, &mut state, None);
        } else {
            ensure_gate(inner, &mut state);
        }
    }

    /// The threads this pool has added past its minimum so far.
    pub fn injections(&self) -> Vec<Injection> {
        let name = &self.handle.inner.name;
        injections()
            .iter()
            .filter(|i| i.pool == *name)
            .cloned()
            .collect()
    }
}

/// The shared pool that runs
/// [`Continuations::Asynchronous`](crate::completion_source::Continuations::Asynchronous)
/// continuations, as
/// .NET queues `RunContinuationsAsynchronously` continuations to its thread
/// pool: at least as many threads as processors (and at least four), every
/// thread named
/// [`CONTINUATION_THREAD_NAME`](crate::completion_source::CONTINUATION_THREAD_NAME),
/// and .NET 6's compensation for blocking waits.
pub fn continuations() -> &'static Pool {
    static SHARED: OnceLock<Pool> = OnceLock::new();
    SHARED.get_or_init(|| {
        let processors = thread::available_parallelism().map_or(1, |n| n.get());
        Pool::new(
            crate::completion_source::CONTINUATION_THREAD_NAME,
            PoolConfig {
                min_threads: processors.max(4),
                max_threads: 512,
                compensate_blocking_waits: true,
                numbered_threads: false,
            },
        )
    })
}

/// Starts one more thread; `why` is recorded when the thread is an
/// injection past the minimum.
fn start_thread(inner: &Arc<Inner>, state: &mut State, why: Option<String>) {
    let thread_name = if inner.config.numbered_threads {
        format!("{}-{}", inner.name, state.next_number)
    } else {
        inner.name.clone()
    };
    let worker = Arc::clone(inner);
    let started = thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || work(worker));
    match started {
        Ok(_) => {
            state.threads += 1;
            state.next_number += 1;
            if let Some(why) = why {
                waits::mark(format!(
                    "pool `{}` adds thread `{thread_name}`: {why}",
                    inner.name
                ));
                let mut recorded = injections();
                if recorded.len() >= MAX_INJECTIONS {
                    recorded.remove(0);
                }
                recorded.push(Injection {
                    pool: inner.name.clone(),
                    thread: thread_name,
                    at: Instant::now(),
                    why,
                });
            }
        }
        // The queued work stays queued: a running thread or the gate takes
        // it later. Say so rather than lose it silently.
        Err(e) => eprintln!("pool `{}` could not start a thread: {e}", inner.name),
    }
}

/// A pool thread: takes work until the pool is closed and empty.
fn work(inner: Arc<Inner>) {
    CURRENT.with(|current| *current.borrow_mut() = Some(Arc::downgrade(&inner)));
    let me = waits::thread_name();
    let mut state = inner.state();
    loop {
        let Some(job) = state.queue.pop_front() else {
            if state.closed {
                break;
            }
            state.idle += 1;
            state = inner
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
            continue;
        };
        state.last_dequeue = Instant::now();
        state.busy.push(me.clone());
        drop(state);
        // A panicking work item must not take the thread, and the work
        // queued behind it, down with it: it is reported and the thread
        // goes on.
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".to_string());
            eprintln!("pool `{}`: a work item panicked: {message}", inner.name);
        }
        state = inner.state();
        if let Some(at) = state.busy.iter().position(|n| *n == me) {
            state.busy.remove(at);
        }
    }
    state.threads -= 1;
}

/// Starts the gate thread if it is not running.
fn ensure_gate(inner: &Arc<Inner>, state: &mut State) {
    if state.gate_running {
        inner.gate.notify_one();
        return;
    }
    let gate = Arc::clone(inner);
    let started = thread::Builder::new()
        .name(format!("{}-gate", inner.name))
        .spawn(move || run_gate(gate));
    match started {
        Ok(_) => state.gate_running = true,
        Err(e) => eprintln!("pool `{}` could not start its gate thread: {e}", inner.name),
    }
}

/// The gate: every [`GATE_PERIOD`] (or at once when woken by a blocked
/// wait), adds a thread if the pool is starving. Ends when no work waits.
/// (It looks at the state under the pool's lock and records an injection
/// while holding it: a diagnosis must read [`starving_pools`] before it takes
/// the watchdog's records, never while holding them.)
fn run_gate(inner: Arc<Inner>) {
    let processors = thread::available_parallelism().map_or(1, |n| n.get());
    let mut state = inner.state();
    let mut last_look = Instant::now();
    loop {
        // Nothing queued: a later post with no free thread starts it again.
        if state.queue.is_empty() || state.closed {
            state.gate_running = false;
            return;
        }
        let free = state.idle > 0;
        let can_grow = state.threads < inner.config.max_threads;
        // .NET 6's compensation: one thread per blocked wait, without delay,
        // up to the minimum plus one per processor.
        let compensated_goal = (inner.config.min_threads + state.blocked)
            .min(inner.config.min_threads + processors)
            .min(inner.config.max_threads);
        if inner.config.compensate_blocking_waits
            && !free
            && !state.queue.is_empty()
            && state.threads < compensated_goal
        {
            let why = format!(
                "{} of its threads blocked in `Completion::wait`, so it compensates at once",
                state.blocked
            );
            start_thread(&inner, &mut state, Some(why));
            continue;
        }
        let now = Instant::now();
        if now.duration_since(last_look) >= GATE_PERIOD {
            last_look = now;
            let since_dequeue = now.duration_since(state.last_dequeue);
            if !free && !state.queue.is_empty() && can_grow && since_dequeue > GATE_PERIOD {
                let why = format!(
                    "work waited, and nothing was dequeued for {} ms",
                    since_dequeue.as_millis()
                );
                start_thread(&inner, &mut state, Some(why));
                continue;
            }
        }
        let wait = GATE_PERIOD.saturating_sub(now.duration_since(last_look));
        state = inner
            .gate
            .wait_timeout(state, wait.max(Duration::from_millis(1)))
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Runs `wait`, a blocking wait on the result of other work (the
/// `Task.Wait` counterpart). On a thread of a pool that compensates, the
/// pool may add a thread meanwhile; anywhere else it just runs `wait`.
pub fn blocking_wait<T>(wait: impl FnOnce() -> T) -> T {
    let inner = CURRENT.with(|current| current.borrow().as_ref().and_then(Weak::upgrade));
    let Some(inner) = inner.filter(|i| i.config.compensate_blocking_waits) else {
        return wait();
    };
    {
        let mut state = inner.state();
        state.blocked += 1;
        ensure_gate(&inner, &mut state);
    }
    /// Counts the wait as over even if it unwinds.
    struct Unblock<'a>(&'a Inner);
    impl Drop for Unblock<'_> {
        fn drop(&mut self) {
            self.0.state().blocked -= 1;
        }
    }
    let _unblock = Unblock(&inner);
    wait()
}

/// The threads added to any pool at or after `since`, oldest first.
pub fn injections_since(since: Instant) -> Vec<Injection> {
    injections()
        .iter()
        .filter(|i| i.at >= since)
        .cloned()
        .collect()
}

/// A pool with work queued and no free thread, as a diagnosis sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Starving {
    /// The pool's name.
    pub pool: String,
    /// Work items waiting for a thread.
    pub queued: usize,
    /// The threads running a work item (all of the pool's threads).
    pub busy: Vec<String>,
    /// False when the pool is at its maximum and will add no thread.
    pub can_grow: bool,
    /// The pool's maximum.
    pub max_threads: usize,
}

/// Every pool that has work queued and no free thread right now.
pub fn starving_pools() -> Vec<Starving> {
    let live: Vec<Arc<Inner>> = pools().iter().filter_map(Weak::upgrade).collect();
    live.iter()
        .filter_map(|inner| {
            let state = inner.state();
            (!state.queue.is_empty() && state.idle == 0 && !state.closed).then(|| Starving {
                pool: inner.name.clone(),
                queued: state.queue.len(),
                busy: state.busy.clone(),
                can_grow: state.threads < inner.config.max_threads,
                max_threads: inner.config.max_threads,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchdog::TestLimit;
    use std::sync::mpsc;

    fn config(min_threads: usize, compensate: bool) -> PoolConfig {
        PoolConfig {
            min_threads,
            max_threads: 4,
            compensate_blocking_waits: compensate,
            numbered_threads: true,
        }
    }

    #[test]
    fn jobs_posted_back_to_back_do_not_share_one_idle_thread() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..20 {
            let pool = Pool::new("back-to-back", config(2, false));
            // One thread, idle once its first job is done.
            let (done, first) = mpsc::channel();
            pool.post(move || done.send(()).unwrap());
            first.recv_timeout(Duration::from_secs(5)).unwrap();
            while pool.handle.inner.state().idle == 0 {
                thread::sleep(Duration::from_millis(1));
            }
            // A waits for B; both are posted while that one thread is idle.
            // B must get a thread of its own, the pool being below its
            // minimum, not the notification A already took.
            let (b_ran, a_waits) = mpsc::channel();
            let (a_done, a_finished) = mpsc::channel();
            pool.post(move || {
                let ran = a_waits.recv_timeout(Duration::from_secs(2)).is_ok();
                a_done.send(ran).unwrap();
            });
            pool.post(move || b_ran.send(()).unwrap());
            let ran = a_finished.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(
                ran,
                "the second job never ran: it counted the first job's thread"
            );
        }
    }

    #[test]
    fn work_runs_on_named_pool_threads() {
        let _limit = TestLimit::seconds(10);
        let pool = Pool::new("named", config(2, false));
        let (sender, names) = mpsc::channel();
        for _ in 0..2 {
            let sender = sender.clone();
            pool.post(move || sender.send(waits::thread_name()).unwrap());
        }
        let mut seen: Vec<String> = (0..2)
            .map(|_| names.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        seen.sort();
        assert!(seen.iter().all(|n| n.starts_with("named-")), "{seen:?}");
        assert!(pool.injections().is_empty());
    }

    #[test]
    fn a_blocked_pool_adds_a_thread_only_after_the_gate_period() {
        let _limit = TestLimit::seconds(10);
        let pool = Pool::new("slow", config(1, false));
        let (release, blocked) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        let started = Instant::now();
        pool.post(move || {
            let _ = blocked.recv_timeout(Duration::from_secs(5));
        });
        pool.post(move || done.send(Instant::now()).unwrap());
        let ran = finished.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(ran - started >= GATE_PERIOD, "{:?}", ran - started);
        let added = pool.injections();
        assert_eq!(added.len(), 1, "{added:?}");
        assert_eq!(added[0].thread, "slow-2");
        assert!(added[0].why.contains("nothing was dequeued"), "{added:?}");
        release.send(()).unwrap();
    }

    #[test]
    fn a_compensating_pool_replaces_a_blocked_waiter_at_once() {
        let _limit = TestLimit::seconds(10);
        let pool = Pool::new("quick", config(1, true));
        let (release, blocked) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        let started = Instant::now();
        pool.post(move || {
            blocking_wait(|| {
                let _ = blocked.recv_timeout(Duration::from_secs(5));
            })
        });
        pool.post(move || done.send(Instant::now()).unwrap());
        let ran = finished.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(ran - started < GATE_PERIOD, "{:?}", ran - started);
        let added = pool.injections();
        assert!(added[0].why.contains("compensates"), "{added:?}");
        release.send(()).unwrap();
    }

    #[test]
    fn a_starving_pool_is_reported_with_its_busy_threads() {
        let _limit = TestLimit::seconds(10);
        let pool = Pool::new("reported", config(1, false));
        let (release, blocked) = mpsc::channel::<()>();
        let (entered, inside) = mpsc::channel();
        pool.post(move || {
            entered.send(()).unwrap();
            let _ = blocked.recv_timeout(Duration::from_secs(5));
        });
        inside.recv_timeout(Duration::from_secs(5)).unwrap();
        pool.post(|| {});
        let starving = starving_pools();
        let mine = starving.iter().find(|s| s.pool == "reported").unwrap();
        assert_eq!(mine.queued, 1);
        assert_eq!(mine.busy, vec!["reported-1".to_string()]);
        assert!(mine.can_grow);
        release.send(()).unwrap();
    }
}
