//! A model check of the completion source's one subtle rule, with loom: the
//! waiter checks for the result and leaves its waker under one lock. loom
//! runs the model in every interleaving of its threads; the correct version
//! always wakes the waiter, and a broken one (check, unlock, then register)
//! is caught.

use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll, Waker};

use loom::sync::{Arc, Mutex};
use loom::thread;

type Shared = Arc<Mutex<(Option<u32>, Option<Waker>)>>;

// ANCHOR: model
/// The waiting side, correct or broken.
struct Completion {
    state: Shared,
    broken: bool,
}

impl Future for Completion {
    type Output = u32;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        if self.broken {
            if let Some(value) = self.state.lock().unwrap().0.take() {
                return Poll::Ready(value);
            }
            // BROKEN: the lock was released above; a result set right here
            // finds no waker, and nobody wakes this task again.
            self.state.lock().unwrap().1 = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut state = self.state.lock().unwrap();
        if let Some(value) = state.0.take() {
            return Poll::Ready(value);
        }
        state.1 = Some(cx.waker().clone()); // under the same lock as the check
        Poll::Pending
    }
}

/// The completing side: store the result, then wake after unlocking.
fn set_result(state: &Shared, value: u32) {
    let waker = {
        let mut state = state.lock().unwrap();
        state.0 = Some(value);
        state.1.take()
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Runs the model in every interleaving; returns how many there were.
fn check(broken: bool) -> usize {
    let explored = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&explored);
    loom::model(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let state: Shared = Arc::new(Mutex::new((None, None)));
        let completer_state = Arc::clone(&state);
        let completer = thread::spawn(move || set_result(&completer_state, 42));
        // loom's block_on parks this thread until the waker is woken; if no
        // interleaving can wake it, loom reports a deadlock.
        assert_eq!(loom::future::block_on(Completion { state, broken }), 42);
        completer.join().unwrap();
    });
    explored.load(std::sync::atomic::Ordering::SeqCst)
}
// ANCHOR_END: model

// ANCHOR: main
fn main() {
    if std::env::args().nth(1).as_deref() == Some("broken") {
        check(true); // loom panics when it finds the bug, and the unwinding aborts
        return;
    }
    let explored = check(false);
    println!("correct version: the waiter was woken in all {explored} interleavings");

    // loom's deadlock panic unwinds out of `block_on`, whose loom objects call
    // back into the stopped scheduler as they drop and panic again: the
    // process aborts, so the broken model runs in a child.
    let exe = std::env::current_exe().expect("this program's path");
    let child = Command::new(exe)
        .arg("broken")
        .output()
        .expect("the child runs");
    let report = String::from_utf8_lossy(&child.stderr);
    match report.lines().find(|line| line.contains("deadlock")) {
        Some(line) if !child.status.success() => {
            println!("broken version: loom found an interleaving where nobody wakes the waiter:");
            println!("  {}", line.trim());
        }
        _ => {
            println!("broken version: NOT caught ({})", child.status);
            std::process::exit(1);
        }
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn the_correct_version_passes_every_interleaving() {
        let _limit = TestLimit::seconds(60);
        assert!(check(false) > 1);
    }
}
