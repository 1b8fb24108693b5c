//! A completion source: one side completes a result, exactly once; the other
//! side waits for it, as a future, a callback, or a blocking wait.
//!
//! It is the Rust counterpart of .NET's `TaskCompletionSource<T>`, built by
//! hand so the mechanics (and the trap) are visible. Chapter 2 builds it step
//! by step; later chapters use this copy.
//!
//! - [`CompletionSource::set_result`] completes; a second attempt returns the
//!   value back in [`AlreadyCompleted`], it never panics or overwrites.
//! - [`Completion`] is the waiting side. As a [`Future`] it registers its
//!   waker and checks the state under one lock, and the completer wakes only
//!   after unlocking, so no wake-up is lost and no waker runs under the lock.
//! - [`Completion::on_completed`] registers a *continuation*, code that runs
//!   when the result arrives. [`Continuations::Inline`] runs it on the thread
//!   that completes, inside `set_result` (what a `TaskCompletionSource` does by
//!   default); [`Continuations::Asynchronous`] queues it to a thread pool,
//!   [`crate::pool::continuations`], as .NET queues it to its thread pool (what
//!   `RunContinuationsAsynchronously` asks for). Part II shows why this choice
//!   can hang a program.
//! - Dropping every [`CompletionSource`] without completing resolves the
//!   waiter with [`Abandoned`] instead of leaving it waiting forever.
//! - As a future, a [`Completion`] spends one unit of tokio's cooperative
//!   budget each time it is polled, as tokio's own `oneshot::Receiver` does: a
//!   task that awaits completions that are always ready still returns to its
//!   scheduler now and then (`tokio::task::coop`).
//!
//! # State
//!
//! Every handle of one completion shares one `State`, behind one mutex:
//!
//!  * `Waiting` - no result yet. The waiting side may have left a waker (a
//!    `poll` that returned `Pending`), a continuation ([`on_completed`]), or
//!    the flag `blocked` ([`wait`], asleep on the condition variable `done`).
//!
//!  * `Done` - the result is there, and nobody has taken it.
//!
//!  * `Taken` - the result was handed on, to the waiting side or to its
//!    continuation. Never left once entered.
//!
//! Every transition is made under the lock, and it goes one way only: the
//! first completion wins, and a later [`set_result`] gets its value back in
//! [`AlreadyCompleted`].
//!
//!  * `Waiting` → `Done`: `complete`, when no continuation is registered. It
//!    is called by [`set_result`] (and [`set_error`]) with the value, or by
//!    the drop of the last [`CompletionSource`] with [`Abandoned`]. After
//!    unlocking, it notifies `done` if `blocked` was set, and wakes the waker
//!    if one was left.
//!
//!  * `Waiting` → `Taken`: the same two callers, when a continuation is
//!    registered. After unlocking, the continuation gets the result: inline,
//!    or posted to the pool ([`Continuations`]). A waker left before the
//!    continuation is dropped unwoken: `on_completed` consumed the
//!    [`Completion`], so no future is left to wake.
//!
//!  * `Done` → `Taken`: the waiting side takes the result: a `poll` that
//!    returns `Ready`, [`wait`], or [`on_completed`], which then runs the
//!    continuation at once, on its own thread, after unlocking.
//!
//!  * `Taken` → `Taken`: a `poll` after `Ready`, or an `on_completed` after
//!    that, gets `Err(Abandoned)`.
//!
//! # Fields beside the state
//!
//!  * `completed` - an `AtomicBool`, true once the state has left `Waiting`.
//!    The `complete` that makes the transition stores it (`Release`) under
//!    the lock; it is never unset. A dropped [`CompletionSource`] loads it
//!    (`Acquire`) first: set, there is nothing left to abandon, and the drop
//!    returns without touching `sources` or the lock. Nothing else reads it;
//!    [`is_complete`] reads the state itself.
//!
//!  * `sources` - an `AtomicUsize`, the number of [`CompletionSource`]
//!    handles while `completed` is false. `clone` adds one (`Relaxed`: a new
//!    handle orders nothing); a drop that finds `completed` false subtracts
//!    one (`AcqRel`), and the drop that takes it from one to zero abandons,
//!    calling `complete` with `Err(Abandoned)` (which does nothing if a
//!    completion came first). Once `completed` is set, drops stop counting:
//!    the count is then too high, and nothing reads it again.
//!
//!  * `completes` - what completing means, for the watchdog ([`completes`]).
//!    Behind a lock of its own, set by the completing side and read once by
//!    [`wait`]; not model-checked.
//!
//! # Locks
//!
//! The state's lock (with `done`) and `completes`' lock are each taken
//! alone: while either is held, neither the other nor any other lock of the
//! crate is taken. No waker is woken, no continuation runs, no job is
//! posted to the pool, and nothing is recorded for [`crate::waits`] while
//! either is held; a waker replaced by a newer one is dropped after
//! unlocking, as tokio's `Notify` does.
//!
//! [`on_completed`]: Completion::on_completed
//! [`wait`]: Completion::wait
//! [`is_complete`]: CompletionSource::is_complete
//! [`set_result`]: CompletionSource::set_result
//! [`set_error`]: CompletionSource::set_error
//! [`completes`]: CompletionSource::completes

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::PoisonError;
use std::task::{Context, Poll, Waker};

use crate::waits::{self, WaitsFor};

// Under `--cfg loom` the model checker's own types replace std's, so loom can
// explore every interleaving of this module (tests/loom_completion_source.rs).
#[cfg(loom)]
use loom::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
};
#[cfg(not(loom))]
use std::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    sync::{Arc, Condvar, Mutex, MutexGuard},
};

/// The name of the pool, and of each of its threads, that runs asynchronous
/// continuations ([`crate::pool::continuations`]).
pub const CONTINUATION_THREAD_NAME: &str = "awd-continuation";

/// Where continuations run when the result arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continuations {
    /// On the completing thread, inside `set_result`.
    Inline,
    /// Queued to the shared thread pool [`crate::pool::continuations`]
    /// (threads named [`CONTINUATION_THREAD_NAME`]); `set_result` returns at
    /// once. Under loom, which cannot model the pool, a thread of its own.
    Asynchronous,
}

/// The completing side was dropped without completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abandoned;

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the completion source was dropped without completing")
    }
}

impl std::error::Error for Abandoned {}

/// A second completion attempt, with the value it tried to set.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyCompleted<T>(pub T);

impl<T> fmt::Display for AlreadyCompleted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the completion source was already completed")
    }
}

impl<T: fmt::Debug> std::error::Error for AlreadyCompleted<T> {}

type Continuation<T> = Box<dyn FnOnce(Result<T, Abandoned>) + Send>;

enum State<T> {
    /// Nothing yet; whoever waits has left a waker or a continuation, or is
    /// blocked in [`Completion::wait`] (`blocked`: only then must the completer
    /// notify the condition variable, which costs a system call).
    Waiting {
        waker: Option<Waker>,
        continuation: Option<Continuation<T>>,
        blocked: bool,
    },
    /// The result, not yet taken by the waiter.
    Done(Result<T, Abandoned>),
    /// The waiter took the result.
    Taken,
}

struct Shared<T> {
    continuations: Continuations,
    state: Mutex<State<T>>,
    done: Condvar,
    /// How many `CompletionSource` handles exist: the last one dropped
    /// abandons the completion if nobody completed it.
    sources: AtomicUsize,
    /// Set, under the lock, when the state leaves `Waiting`; it never goes
    /// back. A dropped handle that sees it has nothing left to abandon, so it
    /// skips both the count and the lock.
    completed: AtomicBool,
    /// What completing this source means, for diagnoses (not model-checked:
    /// it is set once and only read by blocking waits).
    completes: std::sync::Mutex<Option<WaitsFor>>,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The completing side. Cloning it gives another handle that may complete the
/// same result (the first to complete wins).
pub struct CompletionSource<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

/// The waiting side: a future, or a continuation, or a blocking wait.
pub struct Completion<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

/// A new completion source and the completion it completes.
pub fn completion_source<T: Send + 'static>(
    continuations: Continuations,
) -> (CompletionSource<T>, Completion<T>) {
    let shared = Arc::new(Shared {
        continuations,
        state: Mutex::new(State::Waiting {
            waker: None,
            continuation: None,
            blocked: false,
        }),
        done: Condvar::new(),
        sources: AtomicUsize::new(1),
        completed: AtomicBool::new(false),
        completes: std::sync::Mutex::new(None),
    });
    (
        CompletionSource {
            shared: Arc::clone(&shared),
        },
        Completion { shared },
    )
}

impl<T: Send + 'static> CompletionSource<T> {
    /// Completes with `value`, once. The second attempt gets its value back.
    ///
    /// With [`Continuations::Inline`], a registered continuation runs inside
    /// this call, on this thread, before it returns.
    pub fn set_result(&self, value: T) -> Result<(), AlreadyCompleted<T>> {
        complete(&self.shared, Ok(value)).map_err(|result| match result {
            Ok(value) => AlreadyCompleted(value),
            Err(Abandoned) => unreachable!("set_result completes with a value"),
        })
    }

    /// Says what completing this source means (for example the completion of
    /// receive #2), so that a thread stuck in [`Completion::wait`] can be
    /// explained by the watchdog.
    pub fn completes(&self, what: WaitsFor) {
        *self
            .shared
            .completes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(what);
    }

    /// True once a result was set (or the source abandoned): the same
    /// answer as [`Completion::is_complete`].
    pub fn is_complete(&self) -> bool {
        !matches!(*self.shared.state(), State::Waiting { .. })
    }
}

impl<U: Send + 'static, E: Send + 'static> CompletionSource<Result<U, E>> {
    /// Completes with an error, once: the `SetException` counterpart.
    pub fn set_error(&self, error: E) -> Result<(), AlreadyCompleted<Result<U, E>>> {
        self.set_result(Err(error))
    }
}

/// Stores the result and hands it on; the waker and the continuation run
/// after the lock is released. Gives the result back if already completed.
fn complete<T: Send + 'static>(
    shared: &Shared<T>,
    result: Result<T, Abandoned>,
) -> Result<(), Result<T, Abandoned>> {
    let mut state = shared.state();
    let State::Waiting {
        waker,
        continuation,
        blocked,
    } = &mut *state
    else {
        return Err(result);
    };
    let (waker, continuation, blocked) = (waker.take(), continuation.take(), *blocked);
    shared.completed.store(true, Ordering::Release);
    let notify = || {
        if blocked {
            shared.done.notify_all();
        }
    };
    match continuation {
        Some(continuation) => {
            *state = State::Taken;
            drop(state);
            notify();
            match shared.continuations {
                Continuations::Inline => {
                    let _inline = waits::activity("a continuation run inline by `set_result`");
                    continuation(result)
                }
                Continuations::Asynchronous => {
                    waits::mark("`set_result` queues the continuation to the thread pool");
                    #[cfg(not(loom))]
                    crate::pool::continuations().post(move || continuation(result));
                    // loom explores this module's interleavings, not the
                    // pool's: a thread of its own stands for a pool thread.
                    #[cfg(loom)]
                    thread::spawn(move || continuation(result));
                }
            }
        }
        None => {
            *state = State::Done(result);
            drop(state);
            notify();
            if let Some(waker) = waker {
                waits::mark("`set_result` wakes the waiting task");
                waker.wake();
            }
        }
    }
    Ok(())
}

impl<T: Send + 'static> Clone for CompletionSource<T> {
    fn clone(&self) -> Self {
        // A new handle only needs to be counted; it orders nothing.
        self.shared.sources.fetch_add(1, Ordering::Relaxed);
        CompletionSource {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Send + 'static> Drop for CompletionSource<T> {
    fn drop(&mut self) {
        // Completed already: no handle will ever need the count again.
        if self.shared.completed.load(Ordering::Acquire) {
            return;
        }
        // AcqRel: the last handle to go sees everything the others did
        // before they went, including a completion made through them.
        if self.shared.sources.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Already completed is fine: then there is nothing to abandon.
            let _ = complete(&self.shared, Err(Abandoned));
        }
    }
}

impl<T: Send + 'static> Completion<T> {
    /// Registers `continuation` to run with the result. If the result is
    /// already there, it runs now, on this thread (nothing was awaited);
    /// otherwise it runs where the source's [`Continuations`] mode says.
    pub fn on_completed<F>(self, continuation: F)
    where
        F: FnOnce(Result<T, Abandoned>) + Send + 'static,
    {
        let mut state = self.shared.state();
        match &mut *state {
            State::Waiting {
                continuation: slot, ..
            } => *slot = Some(Box::new(continuation)),
            State::Done(_) => {
                let State::Done(result) = std::mem::replace(&mut *state, State::Taken) else {
                    unreachable!("matched Done above");
                };
                drop(state);
                continuation(result);
            }
            State::Taken => {
                drop(state);
                continuation(Err(Abandoned));
            }
        }
    }

    /// True once the result is there (or the source was abandoned): awaiting
    /// now would not wait, and a continuation registered now runs at once.
    pub fn is_complete(&self) -> bool {
        !matches!(*self.shared.state(), State::Waiting { .. })
    }

    /// Blocks this thread until the result arrives.
    pub fn wait(self) -> Result<T, Abandoned> {
        let completes = self
            .shared
            .completes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // On a pool thread, this is the wait .NET 6 compensates for (a
        // `Task.Wait`): the pool may add a thread while it blocks.
        #[cfg(not(loom))]
        return crate::pool::blocking_wait(|| match completes {
            Some(what) => waits::blocking("`Completion::wait`", what, || self.wait_unnoted()),
            None => self.wait_unnoted(),
        });
        #[cfg(loom)]
        match completes {
            Some(what) => waits::blocking("`Completion::wait`", what, || self.wait_unnoted()),
            None => self.wait_unnoted(),
        }
    }

    fn wait_unnoted(self) -> Result<T, Abandoned> {
        let mut state = self.shared.state();
        while let State::Waiting { blocked, .. } = &mut *state {
            *blocked = true; // set under the lock the completer takes
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match std::mem::replace(&mut *state, State::Taken) {
            State::Done(result) => result,
            _ => Err(Abandoned),
        }
    }
}

impl<T: Send + 'static> Future for Completion<T> {
    type Output = Result<T, Abandoned>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // One unit of the task's budget, as `oneshot::Receiver::poll_recv`
        // spends: with none left, the task yields (it is woken to run again
        // at once) instead of running on. Outside a tokio task the budget is
        // unlimited. Given back unless a result is taken.
        #[cfg(not(loom))]
        let budget = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        // Check and register under one lock: a completion between the two
        // would otherwise find no waker, and this task would sleep forever.
        let mut state = self.shared.state();
        let result = match &mut *state {
            State::Waiting { waker, .. } => {
                let replaced = match waker {
                    Some(w) if w.will_wake(cx.waker()) => None,
                    _ => waker.replace(cx.waker().clone()),
                };
                // A waker's drop may run its executor's code: not under the lock.
                drop(state);
                drop(replaced);
                return Poll::Pending;
            }
            State::Done(_) => match std::mem::replace(&mut *state, State::Taken) {
                State::Done(result) => result,
                _ => unreachable!("matched Done above"),
            },
            State::Taken => Err(Abandoned),
        };
        #[cfg(not(loom))]
        budget.made_progress();
        Poll::Ready(result)
    }
}

impl<T: Send + 'static> fmt::Debug for CompletionSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionSource")
            .field("continuations", &self.shared.continuations)
            .field("completed", &self.is_complete())
            .finish()
    }
}

impl<T: Send + 'static> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion").finish_non_exhaustive()
    }
}
