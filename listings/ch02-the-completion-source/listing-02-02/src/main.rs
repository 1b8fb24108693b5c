//! The completion source grown up: continuations that run inline or
//! asynchronously, chosen when the source is made, and a source dropped
//! without completing that resolves its waiter with an error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;

/// Where continuations run when the result arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continuations {
    /// On the completing thread, inside `set_result`.
    Inline,
    /// On a new thread; `set_result` returns at once.
    Asynchronous,
}

/// The completing side was dropped without completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abandoned;

/// A second attempt to complete, with the value it tried to set.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyCompleted<T>(pub T);

type Continuation<T> = Box<dyn FnOnce(Result<T, Abandoned>) + Send>;

enum State<T> {
    /// No result yet; the waiter may have left a waker or a continuation.
    Waiting {
        waker: Option<Waker>,
        continuation: Option<Continuation<T>>,
    },
    /// The result, not yet taken.
    Done(Result<T, Abandoned>),
    /// The waiter took the result.
    Taken,
}

struct Shared<T> {
    continuations: Continuations,
    state: Mutex<State<T>>,
}

/// The completing side.
pub struct CompletionSource<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

/// The waiting side: a future, or a continuation.
pub struct Completion<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

pub fn completion_source<T: Send + 'static>(
    continuations: Continuations,
) -> (CompletionSource<T>, Completion<T>) {
    let shared = Arc::new(Shared {
        continuations,
        state: Mutex::new(State::Waiting {
            waker: None,
            continuation: None,
        }),
    });
    let source = CompletionSource {
        shared: Arc::clone(&shared),
    };
    (source, Completion { shared })
}

impl<T: Send + 'static> CompletionSource<T> {
    /// Completes with `value`, once; a second attempt gets its value back.
    pub fn set_result(&self, value: T) -> Result<(), AlreadyCompleted<T>> {
        complete(&self.shared, Ok(value)).map_err(|result| match result {
            Ok(value) => AlreadyCompleted(value),
            Err(Abandoned) => unreachable!("set_result completes with a value"),
        })
    }
}

// ANCHOR: complete
/// Stores the result and hands it on, after releasing the lock: to the
/// continuation, inline or on a new thread, or to the waker.
fn complete<T: Send + 'static>(
    shared: &Shared<T>,
    result: Result<T, Abandoned>,
) -> Result<(), Result<T, Abandoned>> {
    let mut state = shared.state.lock().unwrap();
    let State::Waiting {
        waker,
        continuation,
    } = &mut *state
    else {
        return Err(result); // already completed: give the result back
    };
    let (waker, continuation) = (waker.take(), continuation.take());
    match continuation {
        Some(continuation) => {
            *state = State::Taken;
            drop(state);
            match shared.continuations {
                // The waiting code runs here, on this thread, before
                // `set_result` returns.
                Continuations::Inline => continuation(result),
                // The waiting code runs elsewhere; this thread goes on.
                Continuations::Asynchronous => {
                    thread::Builder::new()
                        .name("continuation".into())
                        .spawn(move || continuation(result))
                        .expect("a thread for the continuation");
                }
            }
        }
        None => {
            *state = State::Done(result);
            drop(state);
            if let Some(waker) = waker {
                waker.wake(); // only schedules the task: it runs elsewhere
            }
        }
    }
    Ok(())
}

impl<T: Send + 'static> Drop for CompletionSource<T> {
    fn drop(&mut self) {
        // Dropped without completing: the waiter learns it, instead of
        // waiting forever. (Already completed is fine: nothing happens.)
        let _ = complete(&self.shared, Err(Abandoned));
    }
}
// ANCHOR_END: complete

impl<T: Send + 'static> Completion<T> {
    /// Registers code to run with the result: inline or asynchronously, as
    /// the source was made. If the result is already there, it runs now, on
    /// this thread.
    pub fn on_completed(self, continuation: impl FnOnce(Result<T, Abandoned>) + Send + 'static) {
        let mut state = self.shared.state.lock().unwrap();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Waiting { waker, .. } => {
                *state = State::Waiting {
                    waker,
                    continuation: Some(Box::new(continuation)),
                };
            }
            State::Done(result) => {
                drop(state);
                continuation(result);
            }
            State::Taken => {
                drop(state);
                continuation(Err(Abandoned));
            }
        }
    }
}

impl<T: Send + 'static> Future for Completion<T> {
    type Output = Result<T, Abandoned>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.shared.state.lock().unwrap();
        match &mut *state {
            State::Waiting { waker, .. } => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            State::Done(_) => match std::mem::replace(&mut *state, State::Taken) {
                State::Done(result) => Poll::Ready(result),
                _ => unreachable!("matched Done above"),
            },
            State::Taken => Poll::Ready(Err(Abandoned)),
        }
    }
}

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the completion source was dropped without completing")
    }
}

/// Completes a source on a thread named `completer`, whose continuation
/// reports where it ran. Returns what the continuation reported.
fn where_does_it_run(mode: Continuations) -> String {
    let (source, completion) = completion_source::<u32>(mode);
    let (report, reported) = mpsc::channel();
    completion.on_completed(move |result| {
        let on = thread::current().name().unwrap_or("?").to_string();
        let _ = report.send(format!("{result:?} on `{on}`"));
    });
    let completer = thread::Builder::new().name("completer".into());
    completer
        .spawn(move || source.set_result(7).unwrap())
        .unwrap()
        .join()
        .unwrap();
    reported.recv().unwrap()
}

// ANCHOR: main
#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `where_does_it_run` blocks this thread (`join`, `recv`) on purpose, to
    // print in order; nothing else runs on this runtime, so it stalls nobody.
    // Async code that shares its thread with other tasks must not block.
    println!(
        "inline: the continuation got {}",
        where_does_it_run(Continuations::Inline)
    );
    println!(
        "asynchronous: the continuation got {}",
        where_does_it_run(Continuations::Asynchronous)
    );

    let (source, completion) = completion_source::<u32>(Continuations::Asynchronous);
    drop(source); // never completed
    match completion.await {
        Ok(value) => println!("awaited {value}"),
        Err(abandoned) => println!("awaited an error: {abandoned}"),
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn an_inline_continuation_has_run_when_set_result_returns() {
        let _limit = TestLimit::seconds(5);
        let (source, completion) = completion_source::<u32>(Continuations::Inline);
        let (ran, report) = mpsc::channel();
        completion.on_completed(move |r| ran.send(r).unwrap());
        source.set_result(1).unwrap();
        assert_eq!(report.try_recv(), Ok(Ok(1)));
    }

    #[test]
    fn a_dropped_source_resolves_a_continuation_with_an_error() {
        let _limit = TestLimit::seconds(5);
        let (source, completion) = completion_source::<u32>(Continuations::Inline);
        let (ran, report) = mpsc::channel();
        completion.on_completed(move |r| ran.send(r).unwrap());
        drop(source);
        assert_eq!(report.try_recv(), Ok(Err(Abandoned)));
    }

    #[test]
    fn completing_twice_gives_the_value_back() {
        let _limit = TestLimit::seconds(5);
        let (source, _completion) = completion_source::<u32>(Continuations::Inline);
        assert_eq!(source.set_result(1), Ok(()));
        assert_eq!(source.set_result(2), Err(AlreadyCompleted(2)));
    }
}
