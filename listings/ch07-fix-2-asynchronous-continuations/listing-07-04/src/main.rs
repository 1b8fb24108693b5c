//! The passing twin: the callback releases the statistics lock before it
//! completes, so the counting waker can take it.

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

/// A waker that counts every wake-up in `STATS`, then wakes the task.
struct CountingWaker(Waker);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        STATS.lock().wake_ups += 1; // the waker takes the lock...
        self.0.wake_by_ref();
    }
}

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
/// Receives one frame; the callback counts it, unlocks, then completes.
fn receive_frame(socket: &CallbackSocket) -> Completion<Received> {
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let start = socket.receive(vec![0; FRAME_LEN], move |received| {
        STATS.lock().frames += 1; // locked and unlocked in this statement
        let _ = source.set_result(received); // `wake` takes the lock freely
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
    match awd::watchdog::run("server", Duration::from_secs(5), scenario) {
        Ok(reading) => {
            let stats = STATS.lock();
            println!(
                "received {reading}; frames: {}, wake-ups: {}",
                stats.frames, stats.wake_ups
            );
        }
        Err(e) => println!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn waking_after_unlocking_completes() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..20 {
            let outcome = watch("server", Duration::from_secs(5), scenario);
            let reading = outcome.completed().expect("completes").expect("a reading");
            assert_eq!(reading.millidegrees, 21_500);
        }
    }
}
