//! Fix 2 for the inline-continuation deadlock: a completion source that
//! never runs continuations itself (the `RunContinuationsAsynchronously`
//! analogue). Both forms of Chapter 3's deadlock complete.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use awd::bridge::receive_completion;
use awd::completion_source::{completion_source, Abandoned, Continuations};
use awd::frame::{payload_length, Reading, FRAME_LEN, HEADER_LEN, READING_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor, WatchedMutex};

const WAIT: Duration = Duration::from_secs(5);

// ANCHOR: asynchronous
/// Listing 3-1's consumer with one word changed: `Asynchronous`. The
/// continuation still blocks for the body, but on a thread of its own.
fn receive_reading(socket: CallbackSocket, done: Sender<io::Result<(Reading, String)>>) {
    let header = receive_completion(&socket, vec![0; HEADER_LEN], Continuations::Asynchronous);
    header.on_completed(move |header| {
        let body = receive_completion(&socket, vec![0; READING_LEN], Continuations::Asynchronous);
        let reading = decode(header, body.wait());
        let _ = done.send(reading.map(|r| (r, waits::thread_name())));
    });
}
// ANCHOR_END: asynchronous

fn decode(
    header: Result<Received, Abandoned>,
    body: Result<Received, Abandoned>,
) -> io::Result<Reading> {
    let (header, body) = (
        header.map_err(io::Error::other)?,
        body.map_err(io::Error::other)?,
    );
    let header: [u8; HEADER_LEN] = header
        .bytes()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| io::Error::other("a short header"))?;
    payload_length(header)?;
    Ok(Reading::decode(body.bytes().unwrap_or_default())?)
}

/// Listing 3-1's scenario.
fn header_then_body() -> io::Result<(Reading, String)> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    let (done, result) = mpsc::channel();
    receive_reading(socket.clone(), done);
    let header_receive = socket.last_receive().expect("started");
    sensor.write_all(&frame[..HEADER_LEN])?;
    assert!(socket.wait_for_pending_receive_after(header_receive, WAIT));
    sensor.write_all(&frame[HEADER_LEN..])?;
    let waits_for = WaitsFor::Thread(IO_THREAD_NAME.into());
    waits::blocking("`Receiver::recv`", waits_for, || result.recv()).map_err(io::Error::other)?
}

/// Listing 3-3's table of latest readings.
static LATEST: WatchedMutex<BTreeMap<u16, Reading>> = WatchedMutex::new("latest", BTreeMap::new());

/// Listing 3-3's scenario: the callback completes while it holds the lock
/// the continuation needs; only the mode changed.
fn completed_under_a_lock() -> io::Result<(Reading, String)> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let start = socket.receive(vec![0; FRAME_LEN], move |received| {
        let _latest = LATEST.lock();
        let _ = source.set_result(received); // still under the lock
    });
    assert!(matches!(start, Start::Pending));
    let (done, result) = mpsc::channel();
    completion.on_completed(move |received| {
        let stored = received.map_err(io::Error::other).and_then(|received| {
            let bytes = received
                .bytes()
                .ok_or_else(|| io::Error::other("no frame"))?;
            let reading = Reading::decode(&bytes[HEADER_LEN..])?;
            LATEST.lock().insert(reading.sensor, reading); // waits for the callback to unlock
            Ok((reading, waits::thread_name()))
        });
        let _ = done.send(stored);
    });
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

/// A scenario: the reading, and the thread its continuation ran on.
type Scenario = fn() -> io::Result<(Reading, String)>;

fn main() {
    let scenarios: [(&str, Scenario); 2] = [
        ("header, then body (Listing 3-1)", header_then_body),
        (
            "completed under a lock (Listing 3-3)",
            completed_under_a_lock,
        ),
    ];
    for (name, scenario) in scenarios {
        match awd::watchdog::run("server", WAIT, scenario) {
            Ok((reading, on)) => {
                println!("{name}: received {reading}; the continuation ran on `{on}`")
            }
            Err(e) => println!("{name}: failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn asynchronous_continuations_cure_both_forms_of_the_deadlock() {
        let _limit = TestLimit::seconds(30);
        for _ in 0..10 {
            for scenario in [header_then_body, completed_under_a_lock] {
                let outcome = watch("server", WAIT, scenario);
                let (reading, on) = outcome.completed().expect("completes").expect("a reading");
                assert_eq!(reading.millidegrees, 21_500);
                assert_eq!(on, awd::completion_source::CONTINUATION_THREAD_NAME);
            }
        }
    }
}
