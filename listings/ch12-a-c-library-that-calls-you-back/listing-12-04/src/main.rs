//! Fix 1 for sensorlib: the callback hands the completion off to tokio's
//! blocking pool and returns, so the event thread is free to deliver the
//! body. The hand-off needs a `Handle` captured where there is a runtime:
//! sensorlib's thread has none.

use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};

use awd::completion_source::{completion_source, Abandoned, Completion, Continuations};
use awd::frame::{payload_length, Reading, HEADER_LEN, READING_LEN};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;
use listing_12_02::{connected_sensor, Direction, Sensor};
use tokio::runtime::Handle;

// ANCHOR: hand_off
/// Reads `length` bytes; the callback hands the completion to `runtime`'s
/// blocking pool, where `set_result` and its inline continuation run.
fn read_handed_off(
    sensor: &Sensor,
    length: usize,
    runtime: &Handle,
) -> Completion<io::Result<Vec<u8>>> {
    let (source, completion) = completion_source(Continuations::Inline);
    let on_panic = source.clone();
    let runtime = runtime.clone(); // captured here, on a thread with a runtime
    let submitted = sensor.submit(
        Direction::In,
        vec![0; length],
        move |done| {
            let complete = move || {
                let _ = source.set_result(done.into_result());
            };
            if run_with("--current") {
                tokio::task::spawn_blocking(complete); // looks for a runtime here
            } else {
                runtime.spawn_blocking(complete);
            }
        },
        move |panic| {
            let error = io::Error::other(format!("the callback panicked: {panic}"));
            let _ = on_panic.set_result(Err(error));
        },
    );
    if let Err(e) = submitted {
        let (failed, completion) = completion_source(Continuations::Inline);
        let _ = failed.set_result(Err(e));
        return completion;
    }
    completion
}

/// Listing 12-3's consumer, unchanged but for the hand-off.
fn receive_reading(sensor: &Sensor, runtime: &Handle, done: Sender<io::Result<Reading>>) {
    let header = read_handed_off(sensor, HEADER_LEN, runtime);
    let body = read_handed_off(sensor, READING_LEN, runtime);
    header.on_completed(move |header| {
        let thread = std::thread::current();
        println!("the header's continuation runs on {:?}", thread.name());
        // Blocks a thread of the blocking pool until the body arrives.
        let reading = flatten(header).and_then(|header| decode(&header, &flatten(body.wait())?));
        let _ = done.send(reading);
    });
}
// ANCHOR_END: hand_off

/// A transfer's bytes, or why there are none.
fn flatten(result: Result<io::Result<Vec<u8>>, Abandoned>) -> io::Result<Vec<u8>> {
    result.map_err(io::Error::other)?
}

/// The reading in a header and a body, or why not.
fn decode(header: &[u8], body: &[u8]) -> io::Result<Reading> {
    let header: [u8; HEADER_LEN] = header
        .try_into()
        .map_err(|_| io::Error::other("a short header"))?;
    payload_length(header)?;
    Ok(Reading::decode(body)?)
}

/// Listing 12-3's scenario, with a runtime to hand completions to.
fn scenario() -> io::Result<Reading> {
    let runtime = tokio::runtime::Runtime::new()?;
    let (sensor, mut peer) = connected_sensor()?;
    let (done, result) = mpsc::channel();
    receive_reading(&sensor, runtime.handle(), done);
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

/// True when the program runs with `-- <flag>`.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() {
    // A panic's report in one line that is the same every run.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = info.payload_as_str().unwrap_or("a panic");
        eprintln!("a panic on thread {:?}: {message}", thread.name());
    }));
    let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, scenario);
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_hand_off_delivers_every_time() {
        let _limit = TestLimit::seconds(30);
        for _ in 0..10 {
            let outcome = watch("server", DEADLOCK_LIMIT, scenario);
            let reading = outcome.completed().expect("no deadlock").unwrap();
            assert_eq!(reading.millidegrees, 21_500);
        }
    }

    #[test]
    fn the_event_thread_has_no_runtime_to_spawn_on() {
        let _limit = TestLimit::seconds(20);
        let (sensor, mut peer) = connected_sensor().unwrap();
        let (seen, saw) = mpsc::channel();
        sensor
            .submit(
                Direction::In,
                vec![0; 1],
                move |_| {
                    let _ = seen.send(Handle::try_current().map(|_| ()));
                },
                |_| {},
            )
            .unwrap();
        peer.write_all(b"x").unwrap();
        let error = saw.recv().unwrap().unwrap_err();
        assert!(error.is_missing_context(), "{error}");
    }
}
