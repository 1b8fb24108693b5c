//! A UI thread's message loop: the counterpart of a .NET
//! `SynchronizationContext`, built so that a run can show what it queued.
//!
//! A UI framework gives its thread one queue of messages and runs them one at
//! a time. Code that awaits on that thread *captures* the context: when what
//! it awaits completes, its continuation (the rest of the method) is *posted*
//! to the queue, whatever thread completed it, and runs when the loop comes to
//! it. If the loop's thread is blocked, nothing in the queue ever runs.
//!
//! [`MessageLoop::run_until`] makes the current thread such a loop: it runs a
//! future as the loop's first message, then every message posted to the loop,
//! until that future has finished. Between messages the thread drives a
//! `current_thread` tokio runtime (its I/O driver and timers), as a UI thread
//! that waits for messages also waits for the system's events. tokio's own
//! single-threaded executor, a `LocalSet`, behaves the same way: a task woken
//! from another thread is pushed onto the set's queue for its one thread to
//! run (tokio's `task/local.rs`, `Shared::schedule`). This loop keeps its queue
//! where [`crate::waits`] can see it, so a report can say what waits in it.
//!
//! [`result_of`] is C#'s `.Result` on that thread: it runs a future right here
//! up to its first wait, as C# runs an async method up to its first `await`
//! that has to suspend. The task's waker captures the loop: waking it posts
//! the rest of the future to the loop's queue, and [`crate::waits`] records
//! who posted what. Then `result_of` blocks the thread until the rest has run.
//!
//! # State
//!
//! A task is a future in a slot, `future`, and the loop it belongs to,
//! `home`. Its states, as [`crate::waits`] records them for reports:
//!
//!  * `Queued` - in its loop's `queue`. [`post`] puts a new task there, and
//!    so does waking it (`Wake::wake`), from any thread: that is the posting
//!    a report names.
//!
//!  * `Running` - taken from the queue by the loop's thread and being
//!    polled. Only the loop's thread polls, so a task runs on its loop's
//!    thread whoever woke it. [`result_of`] runs its task once at once, on
//!    the calling thread, which is the loop's.
//!
//!  * `Suspended` - the poll returned `Pending`; the task waits for a wake,
//!    outside the queue. A wake during the poll has queued it already, and it
//!    stays `Queued`.
//!
//!  * `Finished` - the poll returned `Ready`: the slot is emptied, and a late
//!    wake queues a task that has nothing left to run.
//!
//! `started` (an `AtomicBool`) is false until the first poll, only to tell
//! a report "up to its first wait" from "the rest": `Relaxed`, as only the
//! loop's thread reads and writes it.
//!
//! # Locks
//!
//! `queue` and `idle` (the loop's waker while it has nothing to run) are
//! each taken alone, and nothing is taken under them; the waker is woken,
//! or dropped when replaced, after both are released. A task's `future` is
//! locked while it is polled, as tokio's `RUNNING` bit locks a task, and
//! only the loop's thread takes it. The future's own code runs under it: it
//! may take any lock, `queue` when it wakes a task, and another task's
//! `future` when it calls [`result_of`], which polls a task it has just
//! made.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use crate::waits::{self, WaitsFor};

/// A message loop, as the tasks posted to it know it.
struct Shared {
    /// The name of the thread that runs the loop.
    thread: String,
    /// The messages posted and not yet run, oldest first.
    queue: Mutex<VecDeque<Arc<Task>>>,
    /// Wakes the loop's thread when it sits waiting for messages.
    idle: Mutex<Option<Waker>>,
}

impl Shared {
    /// Queues `task` to be polled on the loop's thread, and wakes the loop.
    fn post(&self, task: Arc<Task>) {
        waits::task_posted(&task.name, &self.thread);
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(task);
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Woken after both locks are released: the waker is the runtime's,
        // and runs no code of ours.
        if let Some(waker) = idle {
            waker.wake();
        }
    }

    fn next_message(&self) -> Option<Arc<Task>> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A future that belongs to a message loop: polled only on the loop's
/// thread; waking it posts it to the loop's queue.
struct Task {
    name: String,
    home: Arc<Shared>,
    future: Mutex<Option<BoxedTask>>,
    /// False until the task has been polled once.
    started: std::sync::atomic::AtomicBool,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        let home = Arc::clone(&self.home);
        home.post(self);
    }
}

impl Task {
    /// Polls the task once, on the current thread, which must be the loop's.
    fn poll_here(self: &Arc<Self>) {
        let mut slot = self.future.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(future) = slot.as_mut() else {
            return; // already finished: a late wake-up has nothing to run
        };
        let receives_before = waits::last_receive_started_here();
        let waker = Waker::from(Arc::clone(self));
        let running = if self.started.swap(true, Ordering::Relaxed) {
            waits::activity(format!("the rest of task `{}`", self.name))
        } else {
            waits::activity(format!("task `{}` up to its first wait", self.name))
        };
        let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
        drop(running);
        match poll {
            Poll::Ready(()) => {
                *slot = None;
                waits::task_finished(&self.name);
            }
            Poll::Pending => {
                let receive = waits::last_receive_started_here()
                    .filter(|_| waits::last_receive_started_here() != receives_before);
                waits::task_suspended(&self.name, &self.home.thread, receive);
            }
        }
    }
}

thread_local! {
    /// The loop this thread runs, if any: what C# calls
    /// `SynchronizationContext.Current`.
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// A message loop on the current thread.
pub struct MessageLoop;

impl MessageLoop {
    /// Makes the current thread a message loop and runs `first` on it as its
    /// first message; then runs every message posted to the loop until
    /// `first` has finished, and returns its output.
    pub fn run_until<F: Future>(first: F) -> io::Result<F::Output> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            thread: waits::thread_name(),
            queue: Mutex::new(VecDeque::new()),
            idle: Mutex::new(None),
        });
        let previous = CURRENT.with(|current| current.replace(Some(Arc::clone(&shared))));
        let mut first = std::pin::pin!(first);
        let output = runtime.block_on(std::future::poll_fn(|cx| loop {
            while let Some(task) = shared.next_message() {
                waits::task_taken(&task.name);
                task.poll_here();
            }
            if let Poll::Ready(output) = first.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            let replaced = shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .replace(cx.waker().clone());
            drop(replaced); // after the lock: a waker's drop is its executor's code
                            // A message posted before the waker was stored found no waker to
                            // wake: look once more before going idle.
            if shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                return Poll::Pending;
            }
        }));
        CURRENT.with(|current| current.replace(previous));
        Ok(output)
    }
}

/// Posts `future` to the current thread's message loop as a task of its own,
/// as a UI framework posts a message: the loop runs it when it comes to it,
/// and every wake-up posts its rest again.
///
/// # Panics
///
/// If the current thread runs no [`MessageLoop`].
pub fn post<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let home = CURRENT
        .with(|current| current.borrow().clone())
        .expect("post runs on a message loop's thread");
    let task = Arc::new(Task {
        name: task_name::<F>(),
        home: Arc::clone(&home),
        future: Mutex::new(Some(Box::pin(future))),
        started: std::sync::atomic::AtomicBool::new(false),
    });
    home.post(task);
}

/// The name a report gives a task: the function whose future it runs
/// (`receive_reading`), and a number.
fn task_name<F>() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let number = NEXT.fetch_add(1, Ordering::Relaxed);
    let full = std::any::type_name::<F>();
    let without_generics = full.split('<').next().unwrap_or(full);
    let function = without_generics
        .rsplit("::")
        .find(|part| !part.starts_with('{'))
        .unwrap_or(full);
    format!("{function}#{number}")
}

/// What C#'s `.Result` does on a UI thread, in Rust: runs `future` on this
/// thread up to its first wait, with a waker that posts the rest to this
/// thread's message loop (the captured context), then blocks this thread
/// until the rest has run.
///
/// # Panics
///
/// If the current thread runs no [`MessageLoop`]: there would be no context
/// to capture.
pub fn result_of<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let home = CURRENT
        .with(|current| current.borrow().clone())
        .expect("result_of runs on a message loop's thread");
    let name = task_name::<F>();
    let result = Arc::new((Mutex::new(None), Condvar::new()));
    let delivered = Arc::clone(&result);
    let task = Arc::new(Task {
        name: name.clone(),
        home: Arc::clone(&home),
        future: Mutex::new(Some(Box::pin(async move {
            let output = future.await;
            let (slot, filled) = &*delivered;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(output);
            filled.notify_all();
        }))),
        started: std::sync::atomic::AtomicBool::new(false),
    });
    task.poll_here();
    let (slot, filled) = &*result;
    let mut output = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(output) = output.take() {
        return output; // finished without waiting: nothing was posted
    }
    drop(output);
    waits::blocking("`.Result`", WaitsFor::Task(name), || {
        let mut output = slot.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(output) = output.take() {
                return output;
            }
            output = filled.wait(output).unwrap_or_else(PoisonError::into_inner);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchdog::TestLimit;
    use std::time::Duration;

    #[test]
    fn a_future_that_need_not_wait_is_finished_without_posting() {
        let _limit = TestLimit::seconds(10);
        let value = MessageLoop::run_until(async { result_of(async { 6 * 7 }) }).unwrap();
        assert_eq!(value, 42);
    }

    #[test]
    fn a_wake_from_another_thread_posts_the_rest_and_the_loop_runs_it() {
        let _limit = TestLimit::seconds(10);
        let ran_on = std::thread::Builder::new()
            .name("a-loop".to_string())
            .spawn(|| {
                MessageLoop::run_until(async {
                    let (sender, receiver) = tokio::sync::oneshot::channel();
                    post(async move {
                        let (wake, woken) = tokio::sync::oneshot::channel::<()>();
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_millis(20));
                            let _ = wake.send(());
                        });
                        let _ = woken.await; // suspends; the other thread posts the rest
                        let _ = sender.send(waits::thread_name());
                    });
                    // Awaited, not blocked on: the loop stays free to run the rest.
                    receiver.await.expect("the posted task ran")
                })
                .unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(ran_on, "a-loop");
    }

    #[test]
    fn result_of_blocks_the_loop_its_rest_is_posted_to() {
        let _limit = TestLimit::seconds(10);
        let outcome = crate::watchdog::watch("blocks-its-loop", Duration::from_millis(300), || {
            MessageLoop::run_until(async {
                let (sender, receiver) = tokio::sync::oneshot::channel::<u32>();
                std::thread::Builder::new()
                    .name("completer".to_string())
                    .spawn(move || {
                        std::thread::sleep(Duration::from_millis(50));
                        let _ = sender.send(7);
                    })
                    .unwrap();
                result_of(receiver)
            })
        });
        let crate::watchdog::Outcome::Stuck { diagnosis, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(outcome.is_deadlock(), "{diagnosis}");
        let report = diagnosis.lines.join("\n");
        assert!(
            report.contains(
                "posted to the message queue of thread `blocks-its-loop` by thread `completer`"
            ),
            "{report}"
        );
    }

    #[test]
    fn result_of_outside_a_loop_says_why_it_cannot_work() {
        let _limit = TestLimit::seconds(10);
        let panicked = std::thread::spawn(|| result_of(async { 1 })).join();
        let message = panicked.expect_err("no loop to capture");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| message.downcast_ref::<&str>().map(|m| m.to_string()));
        assert_eq!(
            message.as_deref(),
            Some("result_of runs on a message loop's thread")
        );
    }
}
