//! An exercise's solution: Listing 7-3's callback, still completing under
//! the `stats` lock, and a waker that no longer needs that lock: it counts
//! with an atomic counter.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use awd::completion_source::{completion_source, Completion, Continuations};
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};
use awd::waits::WatchedMutex;

/// The connection's counters; wake-ups are no longer among them.
struct Stats {
    frames: u64,
}

static STATS: WatchedMutex<Stats> = WatchedMutex::new("stats", Stats { frames: 0 });

// ANCHOR: waker
/// Wake-ups, counted without a lock.
static WAKE_UPS: AtomicU64 = AtomicU64::new(0);

/// A waker that counts every wake-up, then wakes the task. It takes no
/// lock, so it is safe to call from under anyone's lock.
struct CountingWaker(Waker);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        WAKE_UPS.fetch_add(1, Ordering::Relaxed);
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

/// Listing 7-3's callback, unchanged: it completes, and so wakes, while it
/// holds the `stats` lock.
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
        Ok(reading) => println!(
            "received {reading}; frames: {}, wake-ups: {}",
            STATS.lock().frames,
            WAKE_UPS.load(Ordering::Relaxed)
        ),
        Err(e) => println!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn a_waker_that_takes_no_lock_can_be_woken_under_one() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..20 {
            let outcome = watch("server", Duration::from_secs(5), scenario);
            let reading = outcome.completed().expect("completes").expect("a reading");
            assert_eq!(reading.millidegrees, 21_500);
        }
    }
}
