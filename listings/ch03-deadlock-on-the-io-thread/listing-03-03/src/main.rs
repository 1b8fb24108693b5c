//! The lock variant of the inline-continuation deadlock: the callback
//! completes the source while it holds a lock, and the continuation, run
//! inline, needs the same lock.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::time::Duration;

use awd::completion_source::{completion_source, Completion, Continuations};
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor, WatchedMutex};
use awd::watchdog::DEADLOCK_LIMIT;

/// What the server knows: how many frames arrived, and each sensor's latest
/// reading. Callbacks and request handlers share it.
struct Latest {
    frames: u64,
    by_sensor: BTreeMap<u16, Reading>,
}

/// A mutex that tells the watchdog who holds it (`awd::waits::WatchedMutex`).
static LATEST: WatchedMutex<Latest> = WatchedMutex::new(
    "latest",
    Latest {
        frames: 0,
        by_sensor: BTreeMap::new(),
    },
);

// ANCHOR: completer
/// Receives one frame. The callback counts it, and completes the source.
/// WRONG: it completes while still holding the lock.
fn receive_frame(socket: &CallbackSocket) -> Completion<Received> {
    let (source, completion) = completion_source(Continuations::Inline);
    let start = socket.receive(vec![0; FRAME_LEN], move |received| {
        let mut latest = LATEST.lock();
        latest.frames += 1;
        let _ = source.set_result(received); // the continuation runs here
    }); // `latest` is unlocked only here
    if let Start::Ready(_) = start {
        unreachable!("the sensor sends only once the receive is pending");
    }
    completion
}

/// The continuation: store the reading in the table.
fn store(received: &Received) -> io::Result<Reading> {
    let bytes = received
        .bytes()
        .ok_or_else(|| io::Error::other("no frame"))?;
    let reading = Reading::decode(&bytes[HEADER_LEN..])?;
    LATEST.lock().by_sensor.insert(reading.sensor, reading); // needs the lock
    Ok(reading)
}
// ANCHOR_END: completer

fn scenario() -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let (done, result) = mpsc::channel();
    receive_frame(&socket).on_completed(move |received| {
        let _ = done.send(received.map_err(io::Error::other).and_then(|r| store(&r)));
    });
    assert!(socket.wait_for_pending_receive(Duration::from_secs(5)));
    sensor.write_all(
        &Reading {
            sensor: 7,
            sequence: 1,
            millidegrees: 21_500,
        }
        .encode(),
    )?;
    let waits_for = WaitsFor::Thread(IO_THREAD_NAME.into());
    waits::blocking("`Receiver::recv`", waits_for, || result.recv()).map_err(io::Error::other)?
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
    fn completing_under_the_lock_deadlocks() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("server", DEADLOCK_LIMIT, scenario);
        assert!(outcome.is_deadlock(), "{outcome:?}");
    }
}
