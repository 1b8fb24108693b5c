//! The completion source and the receive bridge take part in tokio's
//! cooperative budget: a task that awaits results that are always ready
//! still yields, so the other tasks of its thread get to run.

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use awd::bridge;
use awd::completion_source::{completion_source, Continuations};
use awd::socket::{loopback_pair, IoThread};
use awd::watchdog::TestLimit;

/// Runs `busy` (handed a flag) and, spawned after it on the same
/// `current_thread` runtime, a task that only sets that flag. `busy` returns
/// how many steps it took before it saw the flag set, if it did.
fn other_task_runs_during<F, Fut>(busy: F) -> Option<usize>
where
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Option<usize>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ran = Arc::new(AtomicBool::new(false));
        let looping = tokio::spawn(busy(Arc::clone(&ran)));
        let other = tokio::spawn(async move { ran.store(true, Ordering::SeqCst) });
        let seen = looping.await.unwrap();
        other.await.unwrap();
        seen
    })
}

#[test]
fn a_loop_of_receives_that_are_always_ready_yields_to_other_tasks() {
    let _limit = TestLimit::seconds(20);
    const BYTES: usize = 64 * 1024;
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    peer.write_all(&vec![7u8; BYTES]).unwrap();
    assert!(socket.wait_until_buffered(BYTES, Duration::from_secs(5)));
    let seen = other_task_runs_during(move |ran| async move {
        // One byte at a time: every receive finds bytes buffered and
        // returns `Ready`; nothing here ever waits.
        let mut buffer = vec![0u8; 1];
        for receives in 0..BYTES {
            if ran.load(Ordering::SeqCst) {
                return Some(receives);
            }
            let received = bridge::receive(&socket, buffer).await.unwrap();
            assert_eq!(received.result.unwrap(), 1);
            buffer = received.buffer;
        }
        None
    });
    let receives = seen.expect("the other task never ran while the loop did");
    // tokio's budget is 128 units a poll and each receive spends one: the
    // 129th yields, and completes once the other task has run.
    assert_eq!(receives, 129, "it ran only after {receives} receives");
}

#[test]
fn awaiting_completions_that_are_already_complete_yields_to_other_tasks() {
    let _limit = TestLimit::seconds(10);
    const ROUNDS: usize = 100_000;
    let seen = other_task_runs_during(|ran| async move {
        for awaited in 0..ROUNDS {
            if ran.load(Ordering::SeqCst) {
                return Some(awaited);
            }
            let (source, completion) = completion_source(Continuations::Inline);
            source.set_result(awaited).unwrap();
            assert_eq!(completion.await, Ok(awaited));
        }
        None
    });
    let awaited = seen.expect("the other task never ran while the loop did");
    assert_eq!(awaited, 129, "it ran only after {awaited} awaits");
}

#[test]
fn outside_a_runtime_the_budget_never_runs_out() {
    let _limit = TestLimit::seconds(10);
    // Polled by hand, on a thread that runs no tokio runtime: each poll of
    // a complete completion must be `Ready` at once.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for round in 0..1_000 {
        let (source, mut completion) = completion_source(Continuations::Inline);
        source.set_result(round).unwrap();
        let polled = std::pin::Pin::new(&mut completion).as_mut().poll(&mut cx);
        assert_eq!(polled, std::task::Poll::Ready(Ok(round)));
    }
}
