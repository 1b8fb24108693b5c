//! The re-entrancy deadlock: a callback submits the next transfer, as
//! libusb's callbacks may; sensorlib runs its callbacks with the device's
//! lock held, and submitting takes that lock again.

use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;

use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;
use listing_12_02::{connected_sensor, Direction, Sensor};

// ANCHOR: resubmit
/// Streams readings: each transfer's callback sends its reading on and
/// submits the transfer for the next.
fn stream(sensor: Arc<Sensor>, readings: Sender<io::Result<Reading>>) -> io::Result<()> {
    let again = Arc::clone(&sensor);
    sensor.submit(
        Direction::In,
        vec![0; FRAME_LEN],
        move |done| {
            let reading = done.into_result().and_then(|frame| decode(&frame));
            let ok = reading.is_ok();
            if readings.send(reading).is_ok() && ok {
                // Inside the callback, with sensorlib's lock held:
                let _ = stream(again, readings); // sensor_submit_transfer locks it again
            }
        },
        |_| {},
    )?;
    Ok(())
}
// ANCHOR_END: resubmit

fn decode(frame: &[u8]) -> io::Result<Reading> {
    Ok(Reading::decode(&frame[HEADER_LEN..])?)
}

/// A sensor sends three readings; the server streams them.
fn scenario() -> io::Result<Vec<Reading>> {
    let (sensor, mut peer) = connected_sensor()?;
    let sensor = Arc::new(sensor);
    let (readings, received) = mpsc::channel();
    stream(Arc::clone(&sensor), readings)?;
    for sequence in 1..=3 {
        let frame = Reading {
            sensor: 7,
            sequence,
            millidegrees: 21_500 + 100 * sequence as i32,
        };
        peer.write_all(&frame.encode())?;
    }
    let waits_for = WaitsFor::Thread(sensor.event_thread().to_string());
    let mut got = Vec::new();
    while got.len() < 3 {
        let next = waits::blocking("`Receiver::recv`", waits_for.clone(), || received.recv());
        let reading = next.map_err(io::Error::other)??;
        println!("reading {}: {:.1} °C", reading.sequence, reading.celsius());
        got.push(reading);
    }
    Ok(got)
}

fn main() {
    let readings = awd::watchdog::run("server", DEADLOCK_LIMIT, scenario);
    println!("received {} readings", readings.map_or(0, |r| r.len()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn resubmitting_from_the_callback_deadlocks_every_time() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..3 {
            let outcome = watch("server", DEADLOCK_LIMIT, scenario);
            assert!(outcome.is_deadlock(), "{outcome:?}");
        }
    }
}
