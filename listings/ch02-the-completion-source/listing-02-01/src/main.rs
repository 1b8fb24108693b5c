//! A completion source by hand: one side sets a result, exactly once; the
//! other side awaits it as a future.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

// ANCHOR: source
/// Where a completion stands.
enum State<T> {
    /// No result yet; the waiter may have left its waker.
    Waiting(Option<Waker>),
    /// The result, not yet taken.
    Done(T),
    /// The waiter took the result.
    Taken,
}

/// The completing side.
pub struct CompletionSource<T> {
    state: Arc<Mutex<State<T>>>,
}

/// The waiting side: a future of the result.
pub struct Completion<T> {
    state: Arc<Mutex<State<T>>>,
}

/// A second attempt to complete, with the value it tried to set.
#[derive(Debug, PartialEq)]
pub struct AlreadyCompleted<T>(pub T);

pub fn completion_source<T>() -> (CompletionSource<T>, Completion<T>) {
    let state = Arc::new(Mutex::new(State::Waiting(None)));
    let source = CompletionSource {
        state: Arc::clone(&state),
    };
    (source, Completion { state })
}

impl<T> CompletionSource<T> {
    /// Completes with `value`, once; a second attempt gets its value back.
    pub fn set_result(&self, value: T) -> Result<(), AlreadyCompleted<T>> {
        let mut state = self.state.lock().unwrap();
        let State::Waiting(waker) = &mut *state else {
            return Err(AlreadyCompleted(value));
        };
        let waker = waker.take();
        *state = State::Done(value);
        drop(state); // unlock first...
        if let Some(waker) = waker {
            waker.wake(); // ...then wake: the waiter may lock at once
        }
        Ok(())
    }
}

impl<T> Future for Completion<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Check and register under one lock: a result that arrived between
        // the two would otherwise find no waker, and this task would sleep
        // forever.
        let mut state = self.state.lock().unwrap();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Waiting(_) => {
                *state = State::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            State::Done(value) => Poll::Ready(value),
            State::Taken => panic!("a Completion was polled after it returned its result"),
        }
    }
}
// ANCHOR_END: source

// ANCHOR: main
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (source, completion) = completion_source::<u32>();
    let completer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20)); // the task is waiting by now
        let first = source.set_result(42);
        let second = source.set_result(43);
        (first, second)
    });
    println!("awaited: {}", completion.await);
    let (first, second) = completer.join().unwrap();
    println!("first set_result: {first:?}, second: {second:?}");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<T>(completion: &mut Completion<T>, counter: &Arc<Counter>) -> Poll<T> {
        let waker = Waker::from(Arc::clone(counter));
        Pin::new(completion).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_result_set_before_the_first_poll_is_ready_at_once() {
        let _limit = TestLimit::seconds(5);
        let (source, mut completion) = completion_source();
        source.set_result(1).unwrap();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        assert_eq!(poll(&mut completion, &counter), Poll::Ready(1));
    }

    #[test]
    fn a_pending_waiter_is_woken_exactly_once() {
        let _limit = TestLimit::seconds(5);
        let (source, mut completion) = completion_source();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        assert_eq!(poll(&mut completion, &counter), Poll::Pending);
        source.set_result(2).unwrap();
        assert_eq!(source.set_result(3), Err(AlreadyCompleted(3)));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut completion, &counter), Poll::Ready(2));
    }
}
