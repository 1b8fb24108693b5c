//! The passing twin of the lock variant: the callback releases the lock
//! before it completes the source, so the inline continuation can take it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::time::Duration;

use awd::completion_source::{completion_source, Completion, Continuations};
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor, WatchedMutex};

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
/// Receives one frame. The callback counts it, unlocks, then completes.
fn receive_frame(socket: &CallbackSocket) -> Completion<Received> {
    let (source, completion) = completion_source(Continuations::Inline);
    let start = socket.receive(vec![0; FRAME_LEN], move |received| {
        LATEST.lock().frames += 1; // locked and unlocked in this statement
        let _ = source.set_result(received); // the continuation runs here
    });
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
    match awd::watchdog::run("server", Duration::from_secs(5), scenario) {
        Ok(reading) => println!(
            "received {reading}; frames counted: {}",
            LATEST.lock().frames
        ),
        Err(e) => println!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn completing_after_unlocking_completes() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..20 {
            let outcome = watch("server", Duration::from_secs(5), scenario);
            let reading = outcome.completed().expect("completes").expect("a reading");
            assert_eq!(reading.sensor, 7);
        }
    }
}
