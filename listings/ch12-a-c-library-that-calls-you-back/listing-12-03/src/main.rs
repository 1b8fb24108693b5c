//! The inline-continuation deadlock (M2) with sensorlib's event thread as
//! the I/O thread: the header's callback completes its source, the inline
//! continuation waits there for the body, and only that thread could
//! deliver the body.

use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};

use awd::completion_source::{Abandoned, Continuations};
use awd::frame::{payload_length, Reading, HEADER_LEN, READING_LEN};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;
use listing_12_02::{connected_sensor, Direction, Done, Sensor};

// ANCHOR: deadlock
/// Reads one reading. Both transfers are submitted at once, as libusb
/// programs keep transfers queued; the code after the header's completion,
/// the continuation, waits for the body.
fn receive_reading(sensor: &Sensor, done: Sender<io::Result<Reading>>) {
    let inline = Continuations::Inline;
    let header = sensor.transfer_then(
        Direction::In,
        vec![0; HEADER_LEN],
        inline,
        Done::into_result,
    );
    let body = sensor.transfer_then(
        Direction::In,
        vec![0; READING_LEN],
        inline,
        Done::into_result,
    );
    let (header, _) = header.into_parts();
    let (body, _) = body.into_parts();
    header.on_completed(move |header| {
        // Inline mode: this runs inside `set_result`, inside sensorlib's
        // callback, on its event thread, with its lock held.
        let body = body.wait(); // blocks the event thread until the body arrives
        let _ = done.send(decode(header, body));
    });
}
// ANCHOR_END: deadlock

/// The reading in a header and a body, or why not.
fn decode(
    header: Result<io::Result<Vec<u8>>, Abandoned>,
    body: Result<io::Result<Vec<u8>>, Abandoned>,
) -> io::Result<Reading> {
    let header = header.map_err(io::Error::other)??;
    let body = body.map_err(io::Error::other)??;
    let header: [u8; HEADER_LEN] = header
        .try_into()
        .map_err(|_| io::Error::other("a short header"))?;
    payload_length(header)?;
    Ok(Reading::decode(&body)?)
}

/// A sensor sends one whole reading, header and body together.
fn scenario() -> io::Result<Reading> {
    let (sensor, mut peer) = connected_sensor()?;
    let (done, result) = mpsc::channel();
    receive_reading(&sensor, done);
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    peer.write_all(&frame)?;
    let waits_for = WaitsFor::Thread(sensor.event_thread().to_string());
    let reading = waits::blocking("`Receiver::recv`", waits_for, || result.recv());
    reading.map_err(io::Error::other)?
}

fn main() {
    println!("the sensor sends a whole reading; both transfers are queued");
    let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, scenario);
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_event_thread_deadlocks_every_time() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..3 {
            let outcome = watch("server", DEADLOCK_LIMIT, scenario);
            assert!(outcome.is_deadlock(), "{outcome:?}");
        }
    }
}
