//! What is left of the hazard with wakers: a waker is code, and `wake` runs
//! it on the completing thread. Here a waker that counts wake-ups in a
//! statistics table is woken by a callback that holds the table's lock.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use awd::completion_source::{completion_source, Completion, Continuations};
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};
use awd::waits::WatchedMutex;
use awd::watchdog::DEADLOCK_LIMIT;

/// Counters shared by the connection's callbacks and its wakers.
struct Stats {
    frames: u64,
    wake_ups: u64,
}

static STATS: WatchedMutex<Stats> = WatchedMutex::new(
    "stats",
    Stats {
        frames: 0,
        wake_ups: 0,
    },
);

// ANCHOR: waker
/// A waker that counts every wake-up in `STATS`, then wakes the task.
struct CountingWaker(Waker);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        STATS.lock().wake_ups += 1; // the waker takes the lock...
        self.0.wake_by_ref();
    }
}
// ANCHOR_END: waker

/// Polls a future with a counting waker; `waiting` turns true once a poll
/// returned `Pending`, that is, once a waker is registered.
struct Counted<F> {
    future: Pin<Box<F>>,
    waiting: Arc<AtomicBool>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::new(CountingWaker(cx.waker().clone())));
        let poll = self.future.as_mut().poll(&mut Context::from_waker(&waker));
        if poll.is_pending() {
            self.waiting.store(true, Ordering::SeqCst);
        }
        poll
    }
}

// ANCHOR: completer
/// Receives one frame; the callback counts it and completes the source.
/// WRONG: it completes, and so wakes, while it holds the `stats` lock.
fn receive_frame(socket: &CallbackSocket) -> Completion<Received> {
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let start = socket.receive(vec![0; FRAME_LEN], move |received| {
        let mut stats = STATS.lock();
        stats.frames += 1;
        let _ = source.set_result(received); // ...and `wake` runs here
    });
    assert!(
        matches!(start, Start::Pending),
        "the sensor sends only later"
    );
    completion
}
// ANCHOR_END: completer

/// A task awaits one frame through a counting waker; the sensor sends once
/// the task is really waiting.
fn scenario() -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let waiting = Arc::new(AtomicBool::new(false));
    let counted = Counted {
        future: Box::pin(receive_frame(&socket)),
        waiting: Arc::clone(&waiting),
    };
    let sending = thread::spawn(move || -> io::Result<_> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !waiting.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        sensor.write_all(
            &Reading {
                sensor: 7,
                sequence: 1,
                millidegrees: 21_500,
            }
            .encode(),
        )?;
        Ok(sensor)
    });
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let received = runtime.block_on(counted).map_err(io::Error::other)?;
    sending.join().expect("the sensor thread")?;
    let bytes = received
        .bytes()
        .ok_or_else(|| io::Error::other("no frame"))?;
    Ok(Reading::decode(&bytes[HEADER_LEN..])?)
}

fn main() {
    let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, scenario);
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn waking_under_the_lock_the_waker_needs_deadlocks() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("server", DEADLOCK_LIMIT, scenario);
        assert!(outcome.is_deadlock(), "{outcome:?}");
    }
}
